"""The SQLite results store: atomic batches, manifest checks, reading back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from diffguard.run.store import ResultStore, StoreError


def test_batches_round_trip(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "r.sqlite", {"config": {"a": 1}}) as st:
        st.write_batch("classifier", "test", 0, [5, 3], labels=np.array([1, 0]), predictions=np.array([1, 1]),
                       logits=np.array([[0.5, 1.5], [2.0, -1.0]]), features=np.ones((2, 3)))
        st.write_batch("m", "test", 0, [5, 3], {"score": np.array([0.25, 0.75]), "stop": np.array([3, 4])},
                       images=np.zeros((2, 4, 4, 1), np.uint8), seconds=1.5)
        assert st.done_batches("m", "test") == {0}
        ids, labels, preds = st.samples("test")
        assert ids.tolist() == [3, 5] and labels.tolist() == [0, 1] and preds.tolist() == [1, 1]
        np.testing.assert_array_equal(st.scores("m", "test", np.array([3, 5, 9])), [0.75, 0.25, np.nan])
        logits, feats = st.outputs("test", np.array([3, 5]))
        np.testing.assert_array_equal(logits, [[2.0, -1.0], [0.5, 1.5]])
        assert feats.shape == (2, 3)
        assert st.image("m", "test", 5).shape == (4, 4, 1) and st.image("m", "test", 7) is None
        assert st.score_keys("m") == ["score", "stop"] and st.seconds("m") == 1.5
        with pytest.raises(StoreError, match="missing"):
            st.outputs("test", np.array([1]))


def test_failed_batch_leaves_nothing(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "r.sqlite") as st:
        with pytest.raises(ValueError, match=r"2 ids but \{\"scores\['score'\]\": 1\}"):
            st.write_batch("m", "s", 0, [1, 2], {"score": np.array([0.5])})  # second value missing
        with pytest.raises(ValueError, match="labels"):
            st.write_batch("m", "s", 0, [1, 2], {"score": np.zeros(2)}, labels=np.zeros(3, int))
        assert st.done_batches("m", "s") == set()
        assert np.isnan(st.scores("m", "s", np.array([1]))).all()


def test_batch_failing_mid_transaction_is_rolled_back(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "r.sqlite") as st:
        with pytest.raises(ValueError, match="bad"):  # labels are written before the score that fails
            st.write_batch("m", "s", 0, [1, 2], {"score": np.array(["0.5", "bad"], dtype=object)},
                           labels=np.zeros(2, int), predictions=np.zeros(2, int))
        assert st.done_batches("m", "s") == set()
        assert st.db.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 0
        assert st.db.execute("SELECT COUNT(*) FROM scores").fetchone()[0] == 0


def test_other_configuration_is_refused(tmp_path: Path) -> None:
    ResultStore(tmp_path / "r.sqlite", {"config": {"limit": 10}, "machine": "a"}).close()
    ResultStore(tmp_path / "r.sqlite", {"config": {"limit": 10}, "machine": "b"}).close()  # same config: fine
    with pytest.raises(StoreError, match="limit"):
        ResultStore(tmp_path / "r.sqlite", {"config": {"limit": 20}})


def test_corrupt_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "r.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError, match="move it away"):
        ResultStore(tmp_path / "r.sqlite", {"config": {}})
