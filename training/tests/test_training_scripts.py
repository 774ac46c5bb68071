"""The training scripts take the shared data folder explicitly and say so when it is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

TRAINING = Path(__file__).resolve().parent.parent


def test_training_files_sit_in_training() -> None:
    import _verifier_data
    import decontaminate
    import synthetic_lexicon

    assert _verifier_data.EXTRA == TRAINING / "data" / "train_extra.jsonl"
    assert _verifier_data.EXTRA.is_file()
    assert all(path.is_file() for path in decontaminate.TRAINING_FILES)
    assert decontaminate.HARD_PAIRS.is_file()  # evaluation data stays in benchmarks/data
    assert synthetic_lexicon.LEXICON_DIR == TRAINING / "lexicon"
    assert {p.name for p in synthetic_lexicon.LEXICON_DIR.iterdir()} >= {
        "antonyms.txt",
        "contrasts.txt",
        "synonyms.txt",
    }


@pytest.mark.parametrize("script", ["train_verifier", "decontaminate"])
def test_no_shared_data_is_a_usage_error(
    script: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import importlib

    main = importlib.import_module(script).main
    monkeypatch.delenv("SEMCACHE_SHARED_DATA", raising=False)
    argv = [str(tmp_path / "draft.jsonl"), "--out", str(tmp_path / "out.jsonl")]
    with pytest.raises(SystemExit) as exit_info:
        main(argv if script == "decontaminate" else ["--out", str(tmp_path / "artifact")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "no shared data folder: give --shared-data DIR or set $SEMCACHE_SHARED_DATA" in err
    with pytest.raises(SystemExit):
        main(
            [*argv, "--shared-data", str(tmp_path / "absent")]
            if script == "decontaminate"
            else ["--shared-data", str(tmp_path / "absent")]
        )
    assert "does not exist" in capsys.readouterr().err
