"""How often a merged training conversation gives a turn's answer away in an earlier turn.

    python docs/experiments/merge/leaks.py runs/default-model-7/data/train/records.jsonl

Merges the world's records two ways, by media alone (consecutive records with the same media,
up to 16 turns: the rule of runs 1-7) and with :func:`mico_chat.training.data.merge_turns` as it
is now, and counts, per question family, the turns whose answer an earlier turn of the same
conversation states (the rule of ``mico_chat.training.data._gives_away``: the same fact asked
before, the same question, or a fact value named in an earlier turn's text).
"""

import collections
import sys

from mico_chat.instruct_data.records import Record, read_records
from mico_chat.training.data import _gives_away, merge_turns


def by_media(records: list[Record], max_turns: int = 16) -> list[list[Record]]:
    groups: list[list[Record]] = []
    for record in records:
        if groups and record.media == groups[-1][0].media and len(groups[-1]) < max_turns:
            groups[-1].append(record)
        else:
            groups.append([record])
    return groups


def leaks(groups: list[list[Record]]) -> dict[str, list[int]]:
    counts: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for group in groups:
        for k, record in enumerate(group):
            family = record.meta.get("family", "?")
            counts[family][1] += 1
            counts[family][0] += any(_gives_away(earlier, record) for earlier in group[:k])
    return counts


def main(path: str) -> None:
    records = [r for r in read_records(path) if isinstance(r, Record) and r.messages and r.media]
    by_id = {r.id: r for r in records}
    old = by_media(records)
    new_merged = [r for _, r in merge_turns(enumerate(records, 1), 16)]
    new = [[by_id[i] for i in r.meta["merged"]] if "merged" in r.meta else [r] for r in new_merged]
    before, after = leaks(old), leaks(new)
    print(f"conversations: by media alone {len(old)}, merge_turns {len(new)} ({len(records)} records)")
    print(f"{'family':14s} {'given away (by media)':>22s} {'given away (merge_turns)':>25s}")
    for family in sorted(before):
        b, a = before[family], after[family]
        print(f"{family:14s} {b[0]:>9d} of {b[1]:<6d} ({b[0] / b[1]:4.0%}) {a[0]:>10d} of {a[1]:<6d} ({a[0] / a[1]:4.0%})")


if __name__ == "__main__":
    main(sys.argv[1])
