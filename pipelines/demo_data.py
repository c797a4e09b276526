"""Synthetic demo data, generated (not shipped) so ``make demo`` needs no downloads.

A small parallel English/German grammar of voice-assistant requests yields:
  * ``intents.jsonl``  MASSIVE-format annotated English utterances of 8 intents;
  * ``pool.txt``       unlabeled English pool: more requests plus off-topic chatter;
  * ``test.jsonl``     a MASSIVE-format evaluation file;
  * ``de_seed.jsonl``  in-domain German target utterances (MASSIVE format);
  * ``de_test.jsonl``  held-out German evaluation text;
  * ``en_source.jsonl`` in-domain English source utterances;
  * ``bitext.tsv``     "general" en-de pairs: in-domain-like requests mixed with software
                       strings, as in the Debian bitext the real configs use.
Everything is seeded; the same seed gives the same bytes.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

# intent -> (scenario, [(english template, german template)]); slots as {type}
GRAMMAR: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "alarm_set": ("alarm", [
        ("wake me up at {time}", "weck mich um {time}"),
        ("set an alarm for {time}", "stelle einen wecker für {time}"),
        ("please set an alarm at {time} {date}", "bitte stelle einen wecker um {time} {date}"),
        ("i need an alarm {date} at {time}", "ich brauche {date} einen wecker um {time}"),
        ("alarm at {time} please", "wecker um {time} bitte")]),
    "weather_query": ("weather", [
        ("what is the weather in {place}", "wie ist das wetter in {place}"),
        ("will it rain {date}", "wird es {date} regnen"),
        ("how hot will it be in {place} {date}", "wie heiß wird es {date} in {place}"),
        ("tell me the forecast for {date}", "sag mir die vorhersage für {date}"),
        ("is it sunny in {place}", "ist es sonnig in {place}")]),
    "play_music": ("play", [
        ("play {song} by {artist}", "spiele {song} von {artist}"),
        ("put on some {genre} music", "spiel etwas {genre} musik"),
        ("i want to hear {artist}", "ich möchte {artist} hören"),
        ("play something by {artist}", "spiel etwas von {artist}")]),
    "play_podcasts": ("play", [
        ("play the latest episode of {podcast}", "spiele die neueste folge von {podcast}"),
        ("resume my podcast {podcast}", "setze meinen podcast {podcast} fort"),
        ("start the podcast {podcast}", "starte den podcast {podcast}"),
        ("play the next episode", "spiele die nächste folge")]),
    "takeaway_order": ("takeaway", [
        ("order a {food} from {restaurant}", "bestelle eine {food} bei {restaurant}"),
        ("i want to order {food} for delivery", "ich möchte {food} zum liefern bestellen"),
        ("can you get me {food} from {restaurant}", "kannst du mir {food} von {restaurant} holen"),
        ("order takeaway from {restaurant}", "bestelle essen bei {restaurant}")]),
    "iot_hue_lightchange": ("iot", [
        ("change the lights to {color}", "ändere das licht auf {color}"),
        ("make the {room} lights {color}", "mach das licht im {room} {color}"),
        ("set the lights in the {room} to {color}", "stelle das licht im {room} auf {color}"),
        ("turn the lights {color}", "schalte das licht auf {color}")]),
    "calendar_set": ("calendar", [
        ("add a meeting with {person} {date}", "füge {date} ein treffen mit {person} hinzu"),
        ("remind me to call {person} at {time}", "erinnere mich {person} um {time} anzurufen"),
        ("schedule lunch with {person} {date}", "plane {date} ein mittagessen mit {person}")]),
    "news_query": ("news", [
        ("what is the latest news", "was sind die neuesten nachrichten"),
        ("tell me the news about {topic}", "erzähl mir die nachrichten über {topic}"),
        ("any news on {topic} {date}", "gibt es {date} nachrichten zu {topic}")]),
}

VALUES: dict[str, list[tuple[str, str]]] = {
    "time": [("seven am", "sieben uhr"), ("six thirty", "halb sieben"), ("noon", "mittag"),
             ("nine pm", "einundzwanzig uhr"), ("five in the morning", "fünf uhr morgens")],
    "date": [("tomorrow", "morgen"), ("today", "heute"), ("on friday", "am freitag"),
             ("next week", "nächste woche"), ("on monday", "am montag")],
    "place": [("berlin", "berlin"), ("london", "london"), ("paris", "paris"),
              ("the city", "der stadt"), ("munich", "münchen")],
    "song": [("yesterday", "yesterday"), ("hey jude", "hey jude"), ("halo", "halo")],
    "artist": [("the beatles", "den beatles"), ("adele", "adele"), ("queen", "queen")],
    "genre": [("jazz", "jazz"), ("rock", "rock"), ("classical", "klassik")],
    "podcast": [("the daily", "the daily"), ("radiolab", "radiolab"), ("serial", "serial")],
    "food": [("pizza", "pizza"), ("burger", "burger"), ("curry", "curry")],
    "restaurant": [("mario's", "mario's"), ("the corner cafe", "dem eckcafé")],
    "color": [("red", "rot"), ("blue", "blau"), ("green", "grün"), ("warm white", "warmweiß")],
    "room": [("kitchen", "küche"), ("bedroom", "schlafzimmer"), ("living room", "wohnzimmer")],
    "person": [("anna", "anna"), ("my boss", "meinem chef"), ("tom", "tom")],
    "topic": [("football", "fußball"), ("the election", "der wahl"), ("science", "wissenschaft")],
}

CHATTER = ["the file could not be opened", "save changes before closing",
           "i like turtles", "that was a great movie", "my cat sleeps all day",
           "where did i put my keys", "the printer is out of paper",
           "this sentence is about nothing", "how do you spell necessary",
           "select a file to import", "connection refused by the server"]
SOFTWARE = [("could not open file {n}", "datei {n} konnte nicht geöffnet werden"),
            ("save changes to document {n}", "änderungen an dokument {n} speichern"),
            ("invalid password for user {n}", "ungültiges passwort für benutzer {n}"),
            ("delete {n} selected items", "{n} ausgewählte elemente löschen"),
            ("connection to server {n} failed", "verbindung zu server {n} fehlgeschlagen"),
            ("print page {n}", "seite {n} drucken")]


def _render(tmpl: str, rng: random.Random, lang: int, chosen: dict[str, int]) -> tuple[str, str]:
    """(plain text, bracket-annotated text) of a template in language 0=en / 1=de."""
    plain, annot, rest = [], [], tmpl
    while "{" in rest:
        pre, _, after = rest.partition("{")
        slot, _, rest = after.partition("}")
        i = chosen.setdefault(slot, rng.randrange(len(VALUES[slot])))
        val = VALUES[slot][i][lang]
        plain += [pre, val]
        annot += [pre, f"[{slot} : {val}]"]
    plain.append(rest)
    annot.append(rest)
    return "".join(plain), "".join(annot)


def _utterances(rng: random.Random, n_per_intent: int, lang: int, locale: str,
                partition: str, start_id: int) -> list[dict]:
    rows = []
    for intent, (scenario, templates) in sorted(GRAMMAR.items()):
        for _ in range(n_per_intent):
            t = rng.choice(templates)[lang]
            text, annot = _render(t, rng, lang, {})
            rows.append({"id": str(start_id + len(rows)), "locale": locale,
                         "partition": partition, "scenario": scenario, "intent": intent,
                         "utt": text, "annot_utt": annot})
    return rows


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")


def make_demo_data(out_dir: str | Path, seed: int = 7) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    _write_jsonl(out / "intents.jsonl", _utterances(rng, 40, 0, "en-US", "train", 1))
    _write_jsonl(out / "test.jsonl", _utterances(rng, 12, 0, "en-US", "dev", 5000))
    pool = [r["utt"] for r in _utterances(rng, 30, 0, "en-US", "train", 0)]
    pool += [rng.choice(CHATTER) for _ in range(120)]  # duplicates on purpose
    rng.shuffle(pool)
    (out / "pool.txt").write_text("".join(p + "\n" for p in pool), "utf-8")
    _write_jsonl(out / "de_seed.jsonl", _utterances(rng, 15, 1, "de-DE", "dev", 1))
    _write_jsonl(out / "de_test.jsonl", _utterances(rng, 8, 1, "de-DE", "test", 9000))
    _write_jsonl(out / "en_source.jsonl", _utterances(rng, 25, 0, "en-US", "train", 20000))
    lines = []
    for _ in range(1200):
        if rng.random() < 0.5:
            intent = rng.choice(sorted(GRAMMAR))
            en_t, de_t = rng.choice(GRAMMAR[intent][1])
            chosen: dict[str, int] = {}
            en, _ = _render(en_t, rng, 0, chosen)
            de, _ = _render(de_t, rng, 1, chosen)
        else:
            en_t, de_t = rng.choice(SOFTWARE)
            n = str(rng.randrange(100))
            en, de = en_t.format(n=n), de_t.format(n=n)
        lines.append(f"{en}\t{de}\n")
    (out / "bitext.tsv").write_text("".join(lines), "utf-8")
    return out
