from neuralforge.engine import train
from neuralforge import records

def test_smoke(make_cfg, tmp_path):
    score = train(make_cfg("trainer.epochs=5"), tmp_path)
    rec = records.read_results(tmp_path)
    print(score, rec["metrics"])
    assert rec["metrics"]["test_acc"] > 0.5
