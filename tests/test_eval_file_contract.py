"""The evaluation file's contract (issue 6): it is read whole, whatever each record's
``partition`` says, and none of its texts reaches the seeds, the existing intents or the
hidden part of the pool -- so a held-out test file scores a run that never saw it."""
from pathlib import Path

from conftest import REPO, massive_line

from winnow.pipelines.config import load_config
from winnow.pipelines.data_access import read_jsonl
from winnow.pipelines.intent_workflow import IntentRun
from winnow.pipelines.pool_scoring import norm_key
from winnow.pipelines.stages import StageRunner

ALARMS = ["wake me up at seven", "set an alarm for six", "alarm at noon please",
          "i need an alarm tomorrow", "wake me at five", "set an alarm at nine pm",
          "alarm for eight thirty"]
WEATHER = ["what is the weather", "will it rain today", "is it sunny in paris",
           "how hot will it be", "tell me the forecast", "weather in london please"]
NEWS = ["what is the latest news", "tell me the news", "any news on football"]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_eval_file_is_read_whole_and_kept_out_of_training(tmp_path):
    rows = [(t, "alarm_set") for t in ALARMS] + [(t, "weather_query") for t in WEATHER] \
        + [(t, "news_query") for t in NEWS]
    annotated = write_lines(tmp_path / "annotated.jsonl",
                            [massive_line(i, intent, text) for i, (text, intent) in enumerate(rows)])
    # every partition label, and texts that also sit in the annotated file (case aside)
    evaluation = [("Wake me up at seven", "alarm_set", "train"),
                  ("what is the weather", "weather_query", "dev"),
                  ("tell me the news", "news_query", "test"),
                  ("play some jazz", "play_music", "test")]
    test_file = write_lines(tmp_path / "eval.jsonl",
                            [massive_line(100 + i, intent, text, partition=part)
                             for i, (text, intent, part) in enumerate(evaluation)])
    cfg = load_config(REPO / "configs" / "demo-intent.yaml", [
        f"output_dir={tmp_path / 'run'}",
        f"annotated=[{{path: {annotated}, format: massive, partition: train}}]",
        f"pool=[{{path: {write_lines(tmp_path / 'pool.txt', ['hello'])}, format: text}}]",
        f"eval.test_path={test_file}", "new_intents=[alarm_set, weather_query]",
        "seeds_per_intent=2"])
    out = tmp_path / "prep"
    out.mkdir()
    stats = IntentRun(cfg, [], StageRunner(cfg.output_dir, quiet=True)).prepare(out)

    test = read_jsonl(out / "test.jsonl")
    assert sorted(r["text"] for r in test) == sorted(t for t, _, _ in evaluation)
    assert stats["test"] == len(evaluation)
    training = [r["text"] for name in ("seeds.jsonl", "existing.jsonl", "pool_hidden.jsonl")
                for r in read_jsonl(out / name)]
    assert len(training) == len(rows) - 3  # the three annotated texts the eval file holds
    assert not {norm_key(t) for t in training} & {norm_key(t) for t, _, _ in evaluation}
    assert stats["seeds"] == 4 and stats["hidden_pool"] == len(ALARMS) + len(WEATHER) - 2 - 4
