"""Folder integrity: the COMPLETE marker and the swap that never leaves a moment without a complete copy."""

from __future__ import annotations

from hf_pretrain.folders import swap_into_place, verify_complete, write_complete_marker


def test_swap_into_place_for_final_and_its_marker(tmp_path):
    for content in ("old", "new"):
        staging = tmp_path / ".tmp-final"
        staging.mkdir()
        (staging / "config.json").write_text(content)
        write_complete_marker(staging)
        swap_into_place(staging, tmp_path / "final")
    assert (tmp_path / "final" / "config.json").read_text() == "new"
    assert verify_complete(tmp_path / "final") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]
    (tmp_path / "final" / "config.json").write_text("tampered")
    assert "does not match" in verify_complete(tmp_path / "final")
