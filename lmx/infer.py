"""python -m lmx.infer --config=configs/<name>.py --checkpoint=DIR/checkpoints/<step> --input=FILE|- --output=FILE
    [--mode=generate|score] [--max_tokens=64] [--temperature=0] [--top_k=0] [--top_p=1] [--seed=0] [--stop=S ...]
    [--num_beams=1] [--alpha=0.6] [--batch_size=8]

Batch inference over a JSONL file, with the decoding engine of lmx.serve (lmx.inference.engine):
  generate: {"prompt": ...} per line -> {"prompt", "completion", "tokens", "logprob", "finish_reason"}; a line may
            override max_tokens, temperature, top_k, top_p, seed and stop for itself.
  score:    {"prompt": ..., "target": ...} -> {"prompt", "target", "logprob", "tokens"}: log p(target | prompt), for
            ranking and multiple choice (pick the target with the highest logprob).
Output lines follow input order. The output is written to a temporary file and renamed at the end, so a failed or
interrupted run leaves no partial file (and never touches an existing one). A progress bar on stderr; tokens/s at
the end.
Exit statuses: 0 done; 2 bad input (flags, config, checkpoint, an input line), nothing written; 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from lmx import quiet

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
LINE_FIELDS = {
    "generate": {"prompt", "max_tokens", "temperature", "top_k", "top_p", "seed", "stop"},
    "score": {"prompt", "target"},
}


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# A line's own settings: field -> (check, what it must be).
LINE_CHECKS = {
    "max_tokens": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "temperature": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "top_k": (lambda v: _integer(v) and v >= 0, "an integer >= 0 (0 = off)"),
    "top_p": (lambda v: _number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "seed": (lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    "stop": (
        lambda v: isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v)),
        "a string or a list of strings",
    ),
}


class BadInput(ValueError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's errors as one line and exit 2
        print(f"lmx.infer: error: {message}; see python -m lmx.infer --help", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m lmx.infer", description=__doc__.split("\n\n")[1])
    p.add_argument("--config", required=True, help="the model's config (configs/<name>.py[:arg]), as lmx.train took it")
    p.add_argument("--checkpoint", required=True, help="DIR/checkpoints/<step> (or DIR: its latest step)")
    p.add_argument("--input", required=True, help="JSONL file of requests, or - for stdin")
    p.add_argument("--output", required=True, help="JSONL file to write (or - for stdout)")
    p.add_argument("--mode", choices=("generate", "score"), default="generate")
    p.add_argument("--max_tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top_k", type=int, default=0)
    p.add_argument("--top_p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0, help="line i samples with seed + i")
    p.add_argument("--stop", action="append", default=[], help="a stop string (repeatable)")
    p.add_argument("--num_beams", type=int, default=1, help="> 1: beam search (greedy, no sampling)")
    p.add_argument("--alpha", type=float, default=0.6, help="beam search length penalty ((5 + n) / 6)^alpha")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--verbose", action="store_true")
    return p


def check_args(args) -> None:
    checks = [
        (args.max_tokens >= 1, f"--max_tokens={args.max_tokens} must be >= 1"),
        (args.temperature >= 0, f"--temperature={args.temperature} must be >= 0"),
        (args.top_k >= 0, f"--top_k={args.top_k} must be >= 0 (0 = off)"),
        (0 < args.top_p <= 1, f"--top_p={args.top_p} must be in (0, 1]"),
        (args.num_beams >= 1, f"--num_beams={args.num_beams} must be >= 1"),
        (args.batch_size >= 1, f"--batch_size={args.batch_size} must be >= 1"),
        (args.input == "-" or os.path.isfile(args.input), f"--input={args.input} is not a file"),
        (
            args.output == "-" or os.path.abspath(args.output) != os.path.abspath(args.input),
            f"--output={args.output} is the input file; write somewhere else",
        ),
        (
            args.output == "-" or os.path.isdir(os.path.dirname(os.path.abspath(args.output))),
            f"--output={args.output}: its directory does not exist",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise BadInput(message)


def read_requests(path: str, mode: str) -> list[dict]:
    """The input lines as dicts; BadInput names the first bad line."""
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8")
    requests = []
    with stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise BadInput(f"--input={path} line {number} is not JSON ({e.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("prompt"), str) or not record["prompt"]:
                raise BadInput(f'--input={path} line {number}: expected {{"prompt": "<non-empty text>", ...}}')
            unknown = sorted(set(record) - LINE_FIELDS[mode])
            if unknown:
                raise BadInput(f"--input={path} line {number}: unknown fields {unknown} for --mode={mode}")
            if mode == "score" and not (isinstance(record.get("target"), str) and record["target"]):
                raise BadInput(f'--input={path} line {number}: --mode=score needs a non-empty "target"')
            for field, (ok, wanted) in LINE_CHECKS.items():
                if field in record and not ok(record[field]):
                    raise BadInput(f"--input={path} line {number}: {field}={record[field]!r} is not {wanted}")
            requests.append(record)
    if not requests:
        raise BadInput(f"--input={path} holds no requests")
    return requests


def _generate(engine, args, requests, write, progress) -> int:
    from lmx.inference.requests import GenerationRequest, SamplingParams

    tokens = 0
    for first in range(0, len(requests), args.batch_size):
        batch = requests[first : first + args.batch_size]
        if args.num_beams > 1:
            results = engine.beam_generate(
                [r["prompt"] for r in batch], num_beams=args.num_beams, max_tokens=args.max_tokens, alpha=args.alpha
            )
        else:
            made = []
            for i, r in enumerate(batch):
                stop = r.get("stop", args.stop)
                params = SamplingParams(
                    max_tokens=int(r.get("max_tokens", args.max_tokens)),
                    temperature=float(r.get("temperature", args.temperature)),
                    top_k=int(r.get("top_k", args.top_k)),
                    top_p=float(r.get("top_p", args.top_p)),
                    seed=int(r.get("seed", args.seed + first + i)),
                    stop=tuple([stop] if isinstance(stop, str) else stop),
                )
                made.append(GenerationRequest(r["prompt"], params))
            results = engine.generate(made)
        for r, g in zip(batch, results, strict=True):
            write(
                {
                    "prompt": r["prompt"],
                    "completion": g.text,
                    "tokens": g.tokens,
                    "logprob": g.logprob,
                    "finish_reason": g.finish_reason,
                }
            )
            tokens += len(g.tokens)
        progress.update(len(batch))
    return tokens


def _score(engine, args, requests, write, progress) -> int:
    tokens = 0
    for first in range(0, len(requests), args.batch_size):
        batch = requests[first : first + args.batch_size]
        for r, s in zip(batch, engine.score([r["prompt"] for r in batch], [r["target"] for r in batch]), strict=True):
            write({"prompt": r["prompt"], "target": r["target"], "logprob": s.logprob, "tokens": len(s.token_logprobs)})
            tokens += len(s.token_logprobs)
        progress.update(len(batch))
    return tokens


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    quiet.configure_logging(verbose=args.verbose)
    try:
        check_args(args)
        requests = read_requests(args.input, args.mode)
        if not args.verbose:
            quiet.hold_native_stderr()
        from lmx.inference.engine import Engine

        engine = Engine.load(
            args.config,
            args.checkpoint,
            max_batch_size=args.batch_size,
            max_new_tokens=max([args.max_tokens, *(int(r.get("max_tokens", 0)) for r in requests)]),
        )
        quiet.release_native_stderr()
    except (ValueError, FileNotFoundError) as e:
        quiet.release_native_stderr()
        print(f"lmx.infer: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        quiet.release_native_stderr()
        print("lmx.infer: interrupted (SIGINT); nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED

    import tqdm

    temporary = None if args.output == "-" else f"{args.output}.tmp-{os.getpid()}"
    out = sys.stdout if temporary is None else open(temporary, "w", encoding="utf-8")
    started = time.perf_counter()
    try:
        with tqdm.tqdm(total=len(requests), desc=args.mode, unit="req", file=sys.stderr, disable=None) as progress:
            run = _generate if args.mode == "generate" else _score
            tokens = run(engine, args, requests, lambda record: out.write(json.dumps(record) + "\n"), progress)
        if temporary is not None:
            out.close()
            os.replace(temporary, args.output)
    except (ValueError, KeyboardInterrupt) as e:
        if temporary is not None:
            out.close()
            os.remove(temporary)
        if isinstance(e, KeyboardInterrupt):
            print("lmx.infer: interrupted (SIGINT); nothing was written", file=sys.stderr)
            return EXIT_INTERRUPTED
        print(f"lmx.infer: error: {e}; nothing was written", file=sys.stderr)
        return EXIT_BAD_INPUT
    seconds = time.perf_counter() - started
    what = "generated" if args.mode == "generate" else "scored"
    print(
        f"lmx.infer: {len(requests)} requests, {tokens} tokens {what} in {seconds:.1f} s ({tokens / seconds:.1f} "
        f"tokens/s) -> {args.output}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # skip XLA's and TensorFlow's teardown, as lmx.train does
