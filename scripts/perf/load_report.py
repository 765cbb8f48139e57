"""The figures of one scripts/perf/load.sh run: a short table, then the same as one JSON line
(`load: {...}`) for tools and tests.

Reads, in the run's state directory, accounting.json (bike_local.accounting's report)
and poller.log (the poller's JSON lines, the summary last); the phase times come from load.sh.
Usage: load_report.py STATE_DIR --shards S --batch-size B --put-s T --deliver-s T --wall-s T
"""

import argparse
import json
import pathlib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("state", type=pathlib.Path)
    for name in ("--shards", "--batch-size"):
        parser.add_argument(name, type=int, required=True)
    for name in ("--put-s", "--deliver-s", "--wall-s"):
        parser.add_argument(name, type=float, required=True)
    args = parser.parse_args()

    accounting = json.loads((args.state / "accounting.json").read_text())
    poller_log = (args.state / "poller.log").read_text().splitlines()
    poller_lines = [json.loads(line) for line in poller_log if line.startswith("{")]
    poller, batches = poller_lines[-1], poller_lines[:-1]
    function = accounting["function"]
    n = accounting["records_in"]

    run_s = args.put_s + args.deliver_s
    # Invocation round trips as the poller timed them: the function's handling plus the
    # emulator, the event's transfer and the runtime's parse of it.
    invoke_s = sum(batch.get("ms", 0) for batch in batches) / 1e3
    function_s = function["total_ms"] / 1e3

    def rate(seconds: float) -> int:
        return round(n / seconds) if seconds else 0

    figures = {
        "records": n, "shards": args.shards, "batch_size": args.batch_size,
        "invocations": poller["batches"], "redeliveries": poller["redeliveries"],
        "function_errors": poller["functionErrors"],
        "put_s": args.put_s, "deliver_s": args.deliver_s, "run_s": round(run_s, 3),
        "invoke_s": round(invoke_s, 3), "function_s": round(function_s, 3),
        "wall_s": args.wall_s,
        "put_records_per_s": rate(args.put_s), "deliver_records_per_s": rate(args.deliver_s),
        "run_records_per_s": rate(run_s), "invoke_records_per_s": rate(invoke_s),
        "function_records_per_s": rate(function_s),
        "function_decode_ms": function["decode_ms"],
        "function_inference_ms": function["inference_ms"],
        "function_publish_ms": function["publish_ms"],
        "published": function["published"], "rejected": function["rejected"],
        "redeliver": function["redeliver"], "put_records_calls": function["put_records_calls"],
        "on_output_stream": accounting["on_output_stream"],
        "duplicates": accounting["duplicates"], "missing": accounting["missing"],
        "unexpected": accounting["unexpected"],
        "wrong_predictions": accounting["wrong_predictions"],
        "unbalanced_batches": function["unbalanced_batches"], "ok": accounting["ok"],
    }

    def row(name: str, seconds: float, note: str = "") -> str:
        return f"{name:<17}{seconds:8.1f} s {rate(seconds):>9,} records/s   {note}".rstrip()

    print(f"records          {n:,} on {args.shards} shards, {poller['batches']} invocations "
          f"(batches of up to {args.batch_size:,}), {poller['redeliveries']} re-deliveries")
    print(row("put (data_in)", args.put_s))
    print(row("deliver (poller)", args.deliver_s))
    print(row("whole run", run_s, "(put + deliver)"))
    print(row("invocations", invoke_s, "(round trips timed by the poller)"))
    print(row("function", function_s,
              f"(sum of total_ms: decode {function['decode_ms']:,.0f} ms, inference "
              f"{function['inference_ms']:,.0f} ms, publish {function['publish_ms']:,.0f} ms)"))
    print(f"{'wall':<17}{args.wall_s:8.1f} s   (services, cold start, run, read-back)")
    print(f"output stream    {accounting['predicted_ids']:,} of {n:,} pred_ids, "
          f"{accounting['missing']} missing, {accounting['duplicates']} duplicates, "
          f"{accounting['wrong_predictions']} wrong predictions, "
          f"{accounting['unexpected']} unexpected")
    print(f"function         {function['published']:,} published, {function['rejected']} "
          f"rejected, {function['redeliver']} re-delivered, "
          f"{function['unbalanced_batches']} unbalanced batches")
    print(f"load: {json.dumps(figures)}")


if __name__ == "__main__":
    main()
