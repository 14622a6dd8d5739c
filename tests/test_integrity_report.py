"""The demo report reads the run's published export and writes every file atomically."""
import json

from app.report import ReportInputs, build_report
from trainer.config import FrontEndConfig, ModelConfig
from trainer.export import export_model
from trainer.model import WeakLabelCNN

ARCH = ModelConfig(channels=(4, 8, 8, 8, 8), convs_per_block=(1, 1, 1, 1, 1), f1_channels=16, num_classes=3)
FE = FrontEndConfig(sample_rate=16000, n_fft=512, hop_length=256, n_mels=64)


def test_the_report_reads_a_published_export_and_leaves_no_temporary_files(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({
        "epochs": [{"epoch": 0, "train_loss": 0.5, "eval_mAP": 0.4, "eval_per_class_ap": [0.1, 0.2, 0.3]}],
        "best": {"mAP": 0.4, "epoch": 0}}))
    for name in ("Old", "Dog"):  # published twice: model/ is a link to the current version
        vocab = [{"index": i, "id": f"c{i}", "name": f"{name} {i}"} for i in range(3)]
        export_model(str(run / "model"), WeakLabelCNN(ARCH, 64).eval(), frontend=FE, architecture=ARCH,
                     vocabulary=vocab)
    out = tmp_path / "report"
    md, html = build_report(ReportInputs("T", str(run), {}, ["weaksound demo"], {"x": 1}), str(out))
    assert "per_class_ap.png" in open(md).read() and "<h1>T</h1>" in open(html).read()
    assert sorted(p.name for p in out.iterdir()) == ["per_class_ap.png", "report.html", "report.md"]
