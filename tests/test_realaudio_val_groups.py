"""scripts/realaudio_val_groups.py: the kit's provenance becomes a --val-groups file that prep accepts."""
from __future__ import annotations

import pytest
from factories import load_script

from data_prep.validation_split import read_val_groups


def _script():
    return load_script("realaudio_val_groups")


def test_every_train_clip_gets_one_row_per_recording_and_eval_clips_none(tmp_path):
    (tmp_path / "provenance").mkdir()
    (tmp_path / "provenance" / "audioset_events.csv").write_text(
        "ytid,split,duration,labels,events(class=source)\n"
        '-1Hq,train,10.000,Music;Piano;Fire,Fire=ufo_firesoft;Piano=gc_piano\n'
        '-2yY,train,10.000,"Music;Gunshot, gunfire","Gunshot, gunfire=ufo_rifle;Piano=gc_piano;Piano=gc_piano"\n'
        "zzEv,eval,4.000,Dog,Dog=dog_bark1\n")
    out = tmp_path / "groups.csv"
    assert _script().main([str(tmp_path), str(out)]) == 0
    assert read_val_groups(str(out)) == {"-1Hq": ("ufo_firesoft", "gc_piano"), "-2yY": ("ufo_rifle", "gc_piano")}


def test_a_folder_without_the_kit_provenance_is_refused_by_name(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _script().main([str(tmp_path), str(tmp_path / "g.csv")])
    assert "audioset_events.csv does not exist" in capsys.readouterr().err
