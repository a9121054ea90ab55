"""Print the front page's list of posts (book/intro.md, section "Contents"), part by part.

Usage: python3 tools/front_page_contents.py SYLLABUS_README  > paste into book/intro.md
A post links to its chapter when a notebook citing its kexue.fm archive number exists.
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = [("part1-probability", "Part 1: Probability, losses and functions"),
         ("part2-optimization", "Part 2: Optimisation"),
         ("part3-attention", "Part 3: Attention and sequence models"),
         ("part4-positions-tokens", "Part 4: Positions, tokens and quantisation"),
         ("part5-generative", "Part 5: Generative models")]


def chapters():
    found = {}
    for md in (ROOT / "book").rglob("*.md"):
        head = md.read_text(encoding="utf-8")[:4000]
        if "kernelspec:" in head:
            for num in re.findall(r"kexue\.fm/archives/(\d+)", head)[:1]:
                found[num] = md.relative_to(ROOT / "book").with_suffix("").as_posix()
    return found


def main(readme):
    have = chapters()
    rows = [l for l in Path(readme).read_text(encoding="utf-8").splitlines() if re.match(r"\| P\d\d \|", l)]
    out = []
    for folder, caption in PARTS:
        out.append(f"\n**{caption}**\n")
        for l in rows:
            pid, en, zh, date, url, part, _ = [c.strip() for c in l.strip("|").split("|")]
            if part != folder + ".md":
                continue
            num = re.search(r"archives/(\d+)", url).group(1)
            en = re.sub(r"\s*\(title unconfirmed\).*", "", en)
            zh = zh.replace(" (likely; unconfirmed)", "")
            date = date.split(" ")[0]
            title = f"{{doc}}`{en} <{have[num]}>`" if num in have else f"{en} *(in preparation)*"
            out.append(f"- {pid} {title}: {zh}, {date}")
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1])
