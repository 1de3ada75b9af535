"""``modaverse eval DATA.jsonl --target GATEWAY --out DIR``: run a benchmark file through a gateway and write
``DIR/report.json``, ``DIR/report.md``, the plots and ``DIR/media/`` (docs/eval.md).

Checked before any call: the benchmark file (one-line error naming the line, exit 2) and matplotlib (exit 2,
saying what to install); then one quick ListModels call tells an unreachable gateway (exit 2). Ctrl-C stops
the run; what was written stays, and the same command resumes it (exit 130).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from ..client import DEFAULT_RETRY, AsyncClient
from ..errors import ModaverseError
from ..retry import RetryPolicy
from .plots import PlotsUnavailable, require_matplotlib, write_plots
from .progress import RunProgress
from .report import analyse, fmt_mean, fmt_number, fmt_ratio, write_report
from .runner import EvalOptions, Evaluator, Plan, plan, run_records
from .schema import DataError, EvalRecord, load_records
from .store import RESULTS_FILE, ResultStore

PROBE_TIMEOUT_S = 5.0
Connect = Callable[[float | None, RetryPolicy | None], AsyncClient]  # (timeout, retry) -> a client


class GatewayUnreachable(Exception):
    pass


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be 1 or more")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's own options (the gateway's --target, --timeout, --tls, --ca, --token are added by cli.py)."""
    parser.add_argument("data", help="benchmark file: one JSON record per line (docs/eval.md)")
    parser.add_argument("--out", required=True, metavar="DIR", help="results, report, plots and media go here")
    parser.add_argument("--concurrency", type=_positive, default=4, metavar="N", help="chats at a time (4)")
    parser.add_argument("--limit", type=_positive, default=None, metavar="N", help="only the file's first N records")
    parser.add_argument(
        "--retry-failed", action="store_true", help="run again the records whose chat failed in an earlier run"
    )
    parser.add_argument("--seed", type=int, default=0, help="LLM and generator seed; the shuffled baseline's (0)")
    parser.add_argument("--no-agreement", action="store_true", help="no Embed calls: skip cross-modal agreement")
    parser.add_argument(
        "--progress", choices=["auto", "bar", "lines", "off"], default="auto", help="bar on a terminal, else lines"
    )


async def _probe(connect: Connect, target: str) -> None:
    client = connect(PROBE_TIMEOUT_S, None)
    try:
        await client.list_models()
    except ModaverseError as exc:
        if exc.code.name in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
            raise GatewayUnreachable(f"gateway {target} is unreachable ({exc})") from None
        raise GatewayUnreachable(f"gateway {target} refused the first call, ListModels ({exc})") from None
    finally:
        await client.close()


async def _run(
    connect: Connect,
    target: str,
    todo: Plan,
    store: ResultStore,
    options: EvalOptions,
    progress_mode: str,
    err: TextIO,
) -> int:
    await _probe(connect, target)
    client = connect(options.timeout, DEFAULT_RETRY)
    async with client:
        embed = client.embed if options.agreement else None
        evaluator = Evaluator(client, store.path.parent, options, embed)
        progress = RunProgress(len(todo.selected), todo.done, stream=err, mode=progress_mode)

        async def ticker() -> None:
            while True:
                await asyncio.sleep(1.0)
                progress.tick()

        ticking = asyncio.create_task(ticker())
        try:
            return await run_records(evaluator, todo.pending, store, progress)
        finally:
            ticking.cancel()
            progress.close()


def _summary(report: dict[str, Any]) -> list[str]:
    lines = [f"routing accuracy {fmt_ratio(report['routing']['accuracy'])}"]
    prompts = report["prompts"]["routed_correctly"]
    lines.append(
        f"prompts (routed correctly): exact match {fmt_ratio(prompts['exact_match'])}, "
        f"token F1 {fmt_mean(prompts['token_f1'])}"
    )
    failures = report["failures"]
    lines.append(
        f"failures: {failures['chat']['count']} chat(s), {failures['invocations']['count']} invocation(s), "
        f"{failures['round_trip_chat']['count']} round trip(s), {failures['embed']['count']} embed call(s)"
    )
    agreed = report["agreement"]
    if agreed.get("skipped"):
        lines.append("agreement: skipped")
    else:
        overall = agreed["overall"]
        lines.append(
            f"agreement: matched {fmt_number(overall['matched_mean'])} vs shuffled "
            f"{fmt_number(overall['shuffled_mean'])} (difference {fmt_number(overall['difference'])})"
        )
    if report["round_trip"]["records"]:
        lines.append(f"round trip, all attributes: {fmt_ratio(report['round_trip']['all_attributes'])}")
    return lines


def run_command(
    args: argparse.Namespace, connect: Connect, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        records: list[EvalRecord] = load_records(args.data)
        require_matplotlib()
    except (DataError, PlotsUnavailable) as exc:
        print(f"error: {exc}", file=err)
        return 2
    options = EvalOptions(
        concurrency=args.concurrency,
        limit=args.limit,
        retry_failed=args.retry_failed,
        seed=args.seed,
        agreement=not args.no_agreement,
        timeout=args.timeout,
    )
    out_dir = Path(args.out)
    store = ResultStore(out_dir)
    loaded = store.load()
    if loaded.truncated:
        print(f"{store.path}: its last line was cut short (a killed run); that record runs again", file=err)
    todo = plan(records, loaded, options)
    notes = [f"{len(todo.selected)} record(s) selected, {todo.done} already done, {len(todo.pending)} to run"]
    if todo.changed:
        notes.append(f"{len(todo.changed)} changed since their stored result")
    if todo.retried:
        notes.append(f"{len(todo.retried)} failed before and run again")
    print("; ".join(notes), file=err)
    finished = 0
    if todo.pending:
        try:
            finished = asyncio.run(_run(connect, args.target, todo, store, options, args.progress, err))
        except GatewayUnreachable as exc:
            print(f"error: {exc}", file=err)
            return 2
        except KeyboardInterrupt:
            done = len(ResultStore(out_dir).load(repair=False).results)
            print(
                f"\ninterrupted: {done} result(s) kept in {store.path}; run the same command again to resume "
                "(finished records are skipped)",
                file=err,
            )
            return 130
    run = {
        "data": str(args.data),
        "target": args.target,
        "seed": args.seed,
        "concurrency": args.concurrency,
        "limit": args.limit,
        "timeout_s": args.timeout,
        "agreement": options.agreement,
        "finished_this_run": finished,
        "results": RESULTS_FILE,
    }
    analysis = analyse(records, store.load().results, seed=args.seed, agreement_enabled=options.agreement, run=run)
    json_path, md_path = write_report(out_dir, analysis.report)
    plots = write_plots(analysis, out_dir)
    for line in _summary(analysis.report):
        print(line, file=out)
    print(f"wrote {json_path}, {md_path}, {', '.join(p.name for p in plots)}", file=out)
    return 0
