"""Render a batch of banners over the queue and print each result as one JSON line.

    PYTHONPATH=clients/python python clients/python/examples/render_batch.py \
        --broker amqp://guest:guest@127.0.0.1:5672// --account banners --key-id qk_… --secret qsec_… \
        --count 50 --prompt "a summer sale banner"

Prints ``{"requestId", "type", "jobId", "data"}`` per final reply, then a summary line
(outcomes by type, requests left unanswered, outcomes received twice for one request, replies
re-delivered with a ``messageId`` already seen and skipped).
"""
from __future__ import annotations

import argparse
import json
import sys

from aigc_queue_client import FINAL_TYPES, QueueClient


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", required=True)
    parser.add_argument("--account", required=True)
    parser.add_argument("--key-id", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--prefix", default="queue-api")
    parser.add_argument("--workflow", default="text2img")
    parser.add_argument("--prompt", default="a banner for a summer sale")
    parser.add_argument("--params", default="{}", help="more parameters as JSON, e.g. '{\"steps\": 6}'")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--idle-timeout", type=float, default=300)
    args = parser.parse_args()

    params = {"prompt": args.prompt, **json.loads(args.params)}
    with QueueClient(args.broker, args.account, args.key_id, args.secret, args.prefix) as client:
        waiting = {client.submit(args.workflow, params, metadata={"index": index}) for index in range(args.count)}
        outcomes: dict[str, int] = {}
        answered: set[str] = set()
        repeated = 0  # a second outcome for a request (never expected: each request is answered once)
        for reply in client.results(idle_timeout=args.idle_timeout):
            if reply["type"] not in FINAL_TYPES:
                continue
            if reply["requestId"] in answered:
                repeated += 1
                continue
            if reply["requestId"] not in waiting:
                continue  # an answer to an earlier run's request
            waiting.discard(reply["requestId"])
            answered.add(reply["requestId"])
            outcomes[reply["type"]] = outcomes.get(reply["type"], 0) + 1
            print(json.dumps({key: reply[key] for key in ("requestId", "type", "jobId", "data")}), flush=True)
            if not waiting:
                break
        print(json.dumps({"summary": outcomes, "unanswered": len(waiting), "repeated": repeated,
                          "duplicatesSkipped": client.duplicates}), flush=True)
    return 0 if not waiting and not repeated else 1


if __name__ == "__main__":
    sys.exit(main())
