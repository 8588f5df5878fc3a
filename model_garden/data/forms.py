"""Synthetic French vehicle-registration certificates (cartes grises): the embedded
default data set, shaped like the user's own (a system prompt, a user prompt holding
the JSON Schema and the form, an assistant JSON answer).

Each form is drawn from realistic value generators (SIV plates ``AB-123-CD``, 17-character
VINs with the maker's prefix, ``dd/mm/yyyy`` dates, French names and addresses with
accents), rendered as a PNG certificate with PIL and as the text an OCR engine would
return. The answer uses the notes' nested layout, one object per field::

    {"Marque": {"contents": "PEUGEOT", "confidence_score": null}, ...}

Blank convention: a field left blank on the form is printed as its code alone and
answered ``{"contents": null, "confidence_score": null}``; only the fields that can be
blank are nullable in the schema. ``confidence_score`` is always ``null`` (it is computed
at inference, not learnt).

Everything depends only on the seed: record ``i`` uses its own random generator, so the
same seed gives byte-identical files.

Try it: ``model-garden make-data forms --n 20 --out /tmp/forms`` or
``python -m model_garden.data.forms /tmp/forms``.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.util
import io
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from model_garden import jsonfmt
from model_garden.data.images import data_uri
from model_garden.data.schema import SCHEMA_FILE, embed_schema

SYSTEM_PROMPT = (
    "You extract the fields of French vehicle registration certificates (certificats "
    "d'immatriculation). Answer with JSON only, following the schema; a field left blank "
    "on the form gets null contents."
)
SPLITS = ("train", "val", "test")
ENERGIES = ("ES", "GO", "EH", "EE", "EL", "GP")  # essence, gazole, hybrids, électrique, GPL
_SIV_LETTERS = "ABCDEFGHJKLMNPQRSTVWXYZ"  # no I, O, U on SIV plates
_VIN_CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"  # no I, O, Q in VINs


@dataclass(frozen=True)
class Field:
    """One answer field.

    Attributes:
        key: The answer key.
        code: Its code on the certificate (``D.1``), printed before the value.
        contents: JSON Schema of a filled value.
        blank: Probability the field is left blank (then it is nullable).
    """

    key: str
    code: str
    contents: dict[str, Any]
    blank: float = 0.0


FIELDS = (
    Field("Immatriculation", "A", {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}-[A-Z]{2}$"}),
    Field("Date de première immatriculation", "B", {"type": "string", "pattern": "^[0-9]{2}/[0-9]{2}/[0-9]{4}$"}),
    Field("Titulaire", "C.1", {"type": "string"}),
    Field("Adresse", "C.3", {"type": "string"}),
    Field("Marque", "D.1", {"type": "string"}),
    Field("Modèle", "D.2", {"type": "string"}, blank=0.1),
    Field("Dénomination commerciale", "D.3", {"type": "string"}, blank=0.15),
    Field("VIN", "E", {"type": "string", "pattern": "^[A-HJ-NPR-Z0-9]{17}$"}),
    Field("Énergie", "P.3", {"enum": list(ENERGIES)}),
    Field("Puissance fiscale", "P.6", {"type": "integer", "minimum": 1}, blank=0.1),
    Field("Couleur", "Couleur", {"type": "string"}, blank=0.3),
)
# Printed on the form but not asked for, so the model has to pick the right lines.
DISTRACTORS = ("I", "J.1", "F.2")
# The certificate layout, row by row (the transcription follows the same order).
LAYOUT = (("A", "B", "I"), ("C.1",), ("C.3",), ("D.1", "D.2", "D.3"), ("E", "J.1", "F.2"), ("P.3", "P.6", "Couleur"))
IMAGE_SIZE = (640, 400)

# maker: (VIN prefix, {commercial name: fixed energy or None})
MAKERS: dict[str, tuple[str, dict[str, str | None]]] = {
    "PEUGEOT": ("VF3", {"208": None, "308": None, "2008": None, "3008": None, "5008": None, "PARTNER": None}),
    "RENAULT": ("VF1", {"CLIO": None, "MEGANE": None, "CAPTUR": None, "TWINGO": None, "KANGOO": None, "ZOE": "EL"}),
    "CITROËN": ("VF7", {"C3": None, "C4": None, "BERLINGO": None, "C5 AIRCROSS": None, "Ë-C4": "EL"}),
    "DACIA": ("UU1", {"SANDERO": None, "DUSTER": None, "JOGGER": None, "SPRING": "EL"}),
    "VOLKSWAGEN": ("WVW", {"GOLF": None, "POLO": None, "T-ROC": None, "TIGUAN": None, "ID.3": "EL"}),
    "TOYOTA": ("VNK", {"YARIS": "EH", "COROLLA": "EH", "C-HR": "EH", "AYGO X": "ES"}),
    "FORD": ("WF0", {"FIESTA": None, "FOCUS": None, "PUMA": None, "KUGA": None}),
    "FIAT": ("ZFA", {"500": None, "PANDA": None, "TIPO": None}),
    "SKODA": ("TMB", {"OCTAVIA": None, "FABIA": None, "KAROQ": None}),
    "MERCEDES-BENZ": ("WDD", {"CLASSE A": None, "CLASSE C": None, "GLA": None}),
}
SURNAMES = (
    "MARTIN", "BERNARD", "DUBOIS", "THOMAS", "ROBERT", "PETIT", "DURAND", "LEROY", "MOREAU", "LAURENT",
    "LEFÈVRE", "GARCIA", "FOURNIER", "GIRARD", "ANDRÉ", "MERCIER", "DUPONT", "BONNET", "FRANÇOIS", "LEGRAND",
    "GARNIER", "ROUSSEAU", "GUÉRIN", "MULLER", "CLÉMENT", "GAUTHIER", "FONTAINE", "CHEVALIER", "GÉRARD",
    "NGUYEN", "LEMAÎTRE", "BENOÎT", "CARON", "PICARD", "HÉBERT", "DESCHAMPS", "BÉRANGER", "NOËL",
)
GIVEN_NAMES = (
    "Claire", "Hélène", "Zoé", "Chloé", "Léa", "Manon", "Camille", "Inès", "Anaïs", "Gaëlle", "Céline",
    "Noémie", "Maëlys", "Océane", "Sophie", "Françoise", "Élodie", "Agnès", "Jérôme", "François", "Benoît",
    "Loïc", "Raphaël", "Théo", "Hugo", "Lucas", "Jean-Pierre", "Frédéric", "Stéphane", "Grégoire", "Joël",
    "Hervé", "Étienne", "Cédric", "Sébastien", "Aurélien", "Anne-Sophie", "Marie-Hélène",
)
COMPANIES = ("SARL TRANSPORTS {}", "SAS LOCATION {}", "EURL GARAGE {}", "SCI {} ET FILS")
STREETS = (
    "rue de la République", "avenue Victor Hugo", "boulevard Jean Jaurès", "rue de l'Église", "allée des Lilas",
    "avenue du Général de Gaulle", "rue Pasteur", "place des Écoles", "rue de la Gare", "impasse Saint-Éloi",
    "chemin des Peupliers", "rue du Château", "place de la Libération", "rue Émile Zola", "quai des Frères Lumière",
    "rue Sainte-Thérèse", "chemin du Moulin", "boulevard de Bretagne", "allée des Cèdres", "rue Molière",
)
CITIES = (
    ("75011", "Paris"), ("69003", "Lyon"), ("13008", "Marseille"), ("25000", "Besançon"), ("45000", "Orléans"),
    ("30000", "Nîmes"), ("42000", "Saint-Étienne"), ("63000", "Clermont-Ferrand"), ("38000", "Grenoble"),
    ("91000", "Évry-Courcouronnes"), ("34500", "Béziers"), ("16000", "Angoulême"), ("36000", "Châteauroux"),
    ("59000", "Lille"), ("44000", "Nantes"), ("31000", "Toulouse"), ("33000", "Bordeaux"), ("67000", "Strasbourg"),
    ("35000", "Rennes"), ("97400", "Saint-Denis"),
)
COLOURS = ("GRIS", "BLANC", "NOIR", "BLEU", "ROUGE", "GRIS FONCÉ", "BLANC NACRÉ", "BEIGE", "VERT", "BORDEAUX", "DORÉ")
GENRES = ("VP", "VP", "VP", "CTTE", "VP")


def answer_schema() -> dict[str, Any]:
    """The JSON Schema of an answer: every field required, nullable where it can be blank."""
    properties = {}
    for f in FIELDS:
        contents = dict(f.contents)
        if f.blank:
            if "enum" in contents:
                contents["enum"] = [*contents["enum"], None]
            else:
                contents["type"] = [contents["type"], "null"]
        properties[f.key] = {
            "type": "object",
            "description": f"field {f.code} of the certificate",
            "properties": {"contents": contents, "confidence_score": {"type": ["number", "null"]}},
            "required": ["contents", "confidence_score"],
            "additionalProperties": False,
        }
    return {"type": "object", "properties": properties, "required": [f.key for f in FIELDS], "additionalProperties": False}


def prompt_schema() -> dict[str, Any]:
    """The schema as the user prompt states it: the same fields, value types and nulls,
    with each distinct field object written once under ``$defs``. It keeps prompts
    about 600 tokens shorter than the strict schema (patterns, descriptions), which is
    what ``schema.json`` holds and constrained decoding enforces."""
    defs: dict[str, Any] = {}
    properties = {}
    for key, spec in answer_schema()["properties"].items():
        contents = {k: v for k, v in spec["properties"]["contents"].items() if k != "pattern"}
        kind = contents["type"] if "type" in contents else "enum"
        name = "_or_".join(kind) if isinstance(kind, list) else kind
        defs[name] = {
            "type": "object",
            "properties": {"contents": contents, "confidence_score": {"type": ["number", "null"]}},
            "required": ["contents", "confidence_score"],
        }
        properties[key] = {"$ref": f"#/$defs/{name}"}
    return {"type": "object", "$defs": defs, "properties": properties, "required": list(properties)}


def _date(rng: random.Random, start: dt.date, end: dt.date) -> dt.date:
    return start + dt.timedelta(days=rng.randrange((end - start).days + 1))


def _letters(rng: random.Random, k: int) -> str:
    return "".join(rng.choice(_SIV_LETTERS) for _ in range(k))


def sample_form(rng: random.Random) -> dict[str, Any]:
    """Draw the values printed on one certificate, by code (``None`` = left blank)."""
    maker = rng.choice(sorted(MAKERS))
    wmi, models = MAKERS[maker]
    name = rng.choice(sorted(models))
    energy = models[name] or rng.choices(ENERGIES, weights=(40, 35, 10, 5, 3, 2))[0]
    first = _date(rng, dt.date(1998, 1, 1), dt.date(2024, 12, 31))
    if rng.random() < 0.08:
        holder = rng.choice(COMPANIES).format(rng.choice(SURNAMES))
    else:
        holder = f"{rng.choice(SURNAMES)} {rng.choice(GIVEN_NAMES)}"
    number = f"{rng.randint(1, 180)}{rng.choice(('', '', '', ' bis', ' ter'))}"
    postcode, city = rng.choice(CITIES)
    type_code = "".join(rng.choice(_VIN_CHARS) for _ in range(rng.randint(5, 7)))
    if rng.random() < 0.5:
        type_code += f"/{rng.randint(1, 9)}{rng.choice(_SIV_LETTERS)}"
    values: dict[str, Any] = {
        "A": f"{_letters(rng, 2)}-{rng.randint(1, 999):03d}-{_letters(rng, 2)}",
        "B": first.strftime("%d/%m/%Y"),
        "I": _date(rng, first, dt.date(2025, 6, 30)).strftime("%d/%m/%Y"),
        "C.1": holder,
        "C.3": f"{number} {rng.choice(STREETS)}, {postcode} {city}",
        "D.1": maker,
        "D.2": type_code,
        "D.3": name,
        "E": wmi + "".join(rng.choice(_VIN_CHARS) for _ in range(8)) + "".join(rng.choice("0123456789") for _ in range(6)),
        "J.1": rng.choice(GENRES),
        "F.2": str(rng.randrange(1200, 3500, 5)),
        "P.3": energy,
        "P.6": rng.randint(1, 3) if energy == "EL" else rng.randint(3, 11),
        "Couleur": rng.choice(COLOURS),
    }
    for f in FIELDS:
        if f.blank and rng.random() < f.blank:
            values[f.code] = None
    return values


def answer(values: dict[str, Any]) -> dict[str, Any]:
    """The gold answer for a form's values."""
    return {f.key: {"contents": values[f.code], "confidence_score": None} for f in FIELDS}


def transcribe(values: dict[str, Any]) -> str:
    """What OCR reads on the form: the header, then ``code: value`` in layout order."""
    lines = ["RÉPUBLIQUE FRANÇAISE", "CERTIFICAT D'IMMATRICULATION"]
    for row in LAYOUT:
        for code in row:
            value = values[code]
            lines.append(f"{code}:" if value is None else f"{code}: {value}")
    return "\n".join(lines)


@functools.cache
def _font_path() -> str:
    # PIL's default font has no accented capitals (É, Ç, Î); matplotlib, a dependency,
    # ships DejaVu Sans, which has them. Found without importing matplotlib.
    spec = importlib.util.find_spec("matplotlib")
    path = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf" if spec and spec.origin else None
    if path is None or not path.is_file():
        raise FileNotFoundError("drawing forms needs matplotlib's DejaVuSans.ttf: pip install matplotlib")
    return str(path)


def render(values: dict[str, Any], rng: random.Random) -> Image.Image:
    """Draw the certificate: a tinted card, a header band, then ``code`` labels over values."""
    width = IMAGE_SIZE[0]
    tint = rng.randint(-8, 8)
    img = Image.new("RGB", IMAGE_SIZE, (236 + tint, 246, 232 - tint))
    draw = ImageDraw.Draw(img)
    small, title, value = (ImageFont.truetype(_font_path(), size=s) for s in (11, 18, 16))
    draw.rectangle((0, 0, width, 48), fill=(214, 228, 240))
    for i, colour in enumerate(((0, 35, 149), (255, 255, 255), (237, 41, 57))):
        draw.rectangle((8 + 8 * i, 8, 16 + 8 * i, 40), fill=colour)
    draw.text((40, 6), "RÉPUBLIQUE FRANÇAISE", font=small, fill=(40, 40, 40))
    draw.text((40, 20), "CERTIFICAT D'IMMATRICULATION", font=title, fill=(0, 0, 0))
    dx, dy = rng.randint(-4, 4), rng.randint(-4, 4)
    for r, row in enumerate(LAYOUT):
        y = 62 + 54 * r + dy
        for c, code in enumerate(row):
            x = 24 + 206 * c + dx
            draw.text((x, y), code, font=small, fill=(90, 90, 110))
            if values[code] is not None:
                draw.text((x, y + 14), str(values[code]), font=value, fill=(10, 10, 10))
        draw.line((16, y + 44, width - 16, y + 44), fill=(200, 210, 200))
    return img


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def split_sizes(n: int, val_fraction: float, test_fraction: float) -> dict[str, int]:
    """How many forms go to train, val and test (validation and test are rounded)."""
    if n < 1:
        raise ValueError(f"--n must be at least 1; got {n}")
    for flag, frac in (("--val-fraction", val_fraction), ("--test-fraction", test_fraction)):
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"{flag} must be in [0, 1); got {frac}")
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    if n - n_val - n_test < 1:
        raise ValueError(f"--val-fraction {val_fraction} and --test-fraction {test_fraction} leave no training form out of {n}")
    return {"train": n - n_val - n_test, "val": n_val, "test": n_test}


def make_forms(
    out: str | Path, n: int = 204, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.1, *, schema_in_prompt: bool = True
) -> dict[str, int]:
    """Generate the data set into ``out``.

    ``schema_in_prompt=False`` leaves the answer schema out of the prompts (about 500 of a
    text record's 1,000 tokens): the decoding grammar enforces it anyway, and ``demo``
    trains twice as many examples per second without it.

    Writes ``text/{train,val,test}.jsonl`` (text prompts with the transcription),
    ``vision/{train,val,test}.jsonl`` (the prompt and the PNG inline as a ``data:`` URI),
    ``images/NNNN.png`` and ``schema.json``. Forms are numbered from 0 and split in order
    (train first); each line has an ``"id"`` (``"0000"``, the image's name).

    Returns:
        The number of forms per split.
    """
    sizes = split_sizes(n, val_fraction, test_fraction)
    out = Path(out)
    for sub in ("text", "vision", "images"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    schema = answer_schema()
    (out / SCHEMA_FILE).write_text(json.dumps(schema, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    intro = embed_schema(prompt_schema()) if schema_in_prompt else "Answer with the form's fields as JSON."
    system = {"role": "system", "content": SYSTEM_PROMPT}
    i = 0
    for split in SPLITS:
        with (
            (out / "text" / f"{split}.jsonl").open("w", encoding="utf-8") as text_fh,
            (out / "vision" / f"{split}.jsonl").open("w", encoding="utf-8") as vision_fh,
        ):
            for _ in range(sizes[split]):
                rng = random.Random(f"forms:{seed}:{i}")
                values = sample_form(rng)
                png = _png(render(values, rng))
                form_id = f"{i:04d}"
                (out / "images" / f"{form_id}.png").write_bytes(png)
                reply = {"role": "assistant", "content": jsonfmt.dumps(answer(values))}
                text_user = {"role": "user", "content": f"{intro}\n\nDocument:\n{transcribe(values)}"}
                vision_user = {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": f"{intro}\n\nThe certificate is in the image."},
                        {"type": "image_url", "image_url": {"url": data_uri(png, "image/png")}},
                    ],
                }
                # The transcription is the text record's source: what --grounded copies
                # values from (the schema pasted into the prompt is not).
                text_fh.write(json.dumps({"id": form_id, "source": transcribe(values), "messages": [system, text_user, reply]}, ensure_ascii=False) + "\n")
                vision_fh.write(json.dumps({"id": form_id, "messages": [system, vision_user, reply]}, ensure_ascii=False) + "\n")
                i += 1
    return sizes


if __name__ == "__main__":
    print(make_forms(sys.argv[1], n=20))
