"""bike_local.accounting and bike_local.reference: what the end-to-end check counts."""

import json

from bike_local import accounting, reference


def output_record(pred_id, cnt, key=None) -> dict:
    data = json.dumps({"model": "bike-demand", "prediction": {"pred_id": pred_id, "cnt": cnt}})
    return {"PartitionKey": str(pred_id) if key is None else key, "Data": data.encode()}


def test_feature_records_carry_reference_rows_in_turn_keyed_by_pred_id():
    rows = len(reference.rows())
    records = reference.feature_records(rows + 1)

    data, key = records[-1]
    assert key == str(rows)
    assert json.loads(data) == {"features": reference.features(0), "pred_id": rows}
    assert reference.expected(rows) == reference.prediction(0)


def test_duplicates_are_counted_and_missing_unexpected_or_wrong_ones_fail():
    right = [output_record(i, reference.expected(i) * (1 + 1e-6)) for i in range(4)]

    clean = accounting.account(4, right + right[:1], [])
    assert clean["ok"] and clean["duplicates"] == 1 and clean["on_output_stream"] == 5

    missing = accounting.account(5, right, [])
    assert not missing["ok"] and missing["missing_sample"] == [4]
    wrong = accounting.account(4, right[:3] + [output_record(3, reference.expected(3) * 1.01)], [])
    assert not wrong["ok"] and wrong["wrong_predictions"] == 1
    other_key = accounting.account(4, right + [output_record(1, 1.0, key="7")], [])
    assert not other_key["ok"] and other_key["unexpected_sample"] == ["7"]


def test_a_batch_whose_counts_do_not_add_up_fails():
    log = "\n".join([
        json.dumps({"message": "batch handled", "records": 3, "published": 2, "rejected": 1,
                    "redeliver": 0}),
        "not JSON, mentions \"batch handled\"",
        json.dumps({"message": "batch handled", "records": 3, "published": 1, "rejected": 0,
                    "redeliver": 1}),
    ])
    batches = accounting.batch_reports(log)

    report = accounting.account(0, [], batches)

    assert len(batches) == 2
    assert not report["ok"] and report["function"]["unbalanced_batches"] == 1
    assert report["function"]["records"] == 6
