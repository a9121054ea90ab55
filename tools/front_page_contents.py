"""Write the front page's list of posts (book/intro.md, section "Contents"), part by part.

Usage: python3 tools/front_page_contents.py SYLLABUS_README
rewrites the list between the markers in book/intro.md. A post links to its chapter when a
notebook citing its kexue.fm archive number exists (tests/test_notebook_sync.py checks that
every chapter in _toc.yml is linked from the front page).
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
    """Archive number -> chapter path, for the notebooks listed in _toc.yml."""
    toc = (ROOT / "_toc.yml").read_text(encoding="utf-8")
    found = {}
    for md in (ROOT / "book").rglob("*.md"):
        if f"file: {md.relative_to(ROOT).with_suffix('').as_posix()}" not in toc:
            continue
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
            unsure = "unconfirmed" in zh or "unconfirmed" in date
            zh = zh.replace(" (likely; unconfirmed)", "")
            date = date.split(" ")[0] + (" (title and date unconfirmed)" if unsure else "")
            title = f"{{doc}}`{en} <{have[num]}>`" if num in have else f"{en} *(in preparation)*"
            out.append(f"- {pid} {title}: {zh}, {date}")
    intro = ROOT / "book" / "intro.md"
    text = intro.read_text(encoding="utf-8")
    start, end = "<!-- contents:start -->", "<!-- contents:end -->"
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    intro.write_text(head + start + "\n" + "\n".join(out) + "\n\n" + end + tail, encoding="utf-8")
    print(f"wrote {sum(l.startswith('- P') for l in out)} posts into {intro}")


if __name__ == "__main__":
    main(sys.argv[1])
