import pytest

from mfrbench.datasets import create_dataset
from mfrbench.errors import MfrbenchError
from mfrbench.pipeline import map_records, process_records


class _Broken:
    def __init__(self):
        raise MfrbenchError("model file missing; set MFRBENCH_MODELS")


class _Echo:
    def __init__(self, fail_on: str = ""):
        self.fail_on = fail_on

    def __call__(self, rec):
        from mfrbench.pipeline import base_row

        if rec.key.endswith(self.fail_on) and self.fail_on:
            raise RuntimeError("boom")
        return {**base_row(rec), "status": "ok"}


def test_bad_worker_config_fails_fast_instead_of_hanging(tmp_path):
    ds = create_dataset("synthetic", tmp_path / "s", identities=2, per_identity=2)
    with pytest.raises(MfrbenchError, match="model file missing"):
        list(map_records(ds.records(), _Broken, {}, workers=2))


@pytest.mark.parametrize("workers", [1, 2])
def test_unexpected_error_on_one_image_is_recorded_not_fatal(tmp_path, workers):
    ds = create_dataset("synthetic", tmp_path / "s", identities=3, per_identity=3)
    meta = process_records(ds.records(), tmp_path / f"o{workers}", kind="test", config={}, factory=_Echo,
                           factory_kwargs={"fail_on": "0001.png"}, workers=workers, progress=False)
    assert (meta["inputs"], meta["ok"], meta["skipped"]) == (9, 6, 3)
    assert meta["skip_reasons"] == {"error": 3}
