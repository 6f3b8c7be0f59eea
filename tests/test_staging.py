from pathlib import Path

from torchgeo_ssg2.staging import staged_targets, staging_path


def test_staged_targets(tmp_path: Path) -> None:
    a, b, c = tmp_path / 'a.tif', tmp_path / 'b.tif', tmp_path / 'c.tif'
    staging_path(a, pid=12).touch()
    staging_path(b, pid=34, suffix='-cog').mkdir()
    c.touch()  # a finished file has no staging name
    (tmp_path / 'other.tif.partial-5').touch()  # not asked for
    names = ['a.tif', 'b.tif', 'c.tif', 'missing.tif']
    assert staged_targets(tmp_path, names) == [a, b]
    assert staged_targets(tmp_path / 'absent', names) == []
