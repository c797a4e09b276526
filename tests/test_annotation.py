import pytest

from winnow.selectors.annotation import (AnnotationError, annotate, bio_tags, parse_annotation,
                                         slot_types, slots_from_bio, template)


def test_parse_and_roundtrip():
    a = "play [song_name : undecided] by [artist_name : ella fitzgerald]"
    text, slots = parse_annotation(a)
    assert text == "play undecided by ella fitzgerald"
    assert [(s.type, s.value) for s in slots] == [("song_name", "undecided"),
                                                  ("artist_name", "ella fitzgerald")]
    assert text[slots[1].start:slots[1].end] == "ella fitzgerald"
    assert annotate(text, slots) == a
    assert template(a) == "play [song_name] by [artist_name]"
    assert slot_types(a) == {"song_name", "artist_name"}


@pytest.mark.parametrize("bad", ["play [song_name : x", "play ] x", "[[a : b]]", "play [ : x]",
                                 "play [a b : x]"])
def test_malformed_annotations_raise(bad):
    with pytest.raises(AnnotationError):
        parse_annotation(bad)


def test_bio_roundtrip():
    a = "wake me up at [time : nine am] on [date : friday]"
    toks, tags = bio_tags(*parse_annotation(a))
    assert tags == ["O", "O", "O", "O", "B-time", "I-time", "O", "B-date"]
    assert slots_from_bio(toks, tags) == a
