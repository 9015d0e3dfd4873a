from kurabe.phases.schedule import build_schedule


def test_schedule_warms_up_then_alternates_model_order():
    s = build_schedule(["a", "b"], ["p1", "p2"], repeats=2, warmup=1)
    assert [(x.model, x.phase) for x in s[:2]] == [("a", "warmup"), ("b", "warmup")]
    measured = [(x.model, x.prompt_id, x.repeat) for x in s if x.phase == "measure"]
    assert measured == [
        ("a", "p1", 0), ("b", "p1", 0), ("b", "p2", 0), ("a", "p2", 0),
        ("a", "p1", 1), ("b", "p1", 1), ("b", "p2", 1), ("a", "p2", 1),
    ]
    assert [x.seq for x in s] == list(range(len(s)))
    assert build_schedule(["a", "b"], ["p1", "p2"], 2, 1) == s  # deterministic, for --resume
