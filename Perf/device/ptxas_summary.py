"""Summarises `ptxas -v` output written by ptx-report.sh ("== kernel" headers) as TSV:
kernel, registers, stack frame bytes, spill stores, spill loads, static smem bytes, status."""
import re
import sys


def summarise(text):
    rows, name, row = [], None, None
    for line in text.splitlines():
        if line.startswith("== "):
            if row is not None:
                rows.append(row)
            name = line[3:].strip()
            row = {"kernel": name, "registers": "", "stack": "", "spill_stores": "", "spill_loads": "", "smem": "", "status": "ok"}
            continue
        if row is None:
            continue
        if "Compiling entry function" in line:
            row["_entry"] = True
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and row.get("_entry") and not row["stack"]:
            row["stack"], row["spill_stores"], row["spill_loads"] = m.groups()
        m = re.search(r"Used (\d+) registers", line)
        if m and row.get("_entry") and not row["registers"]:
            row["registers"] = m.group(1)
            s = re.search(r"(\d+) bytes smem", line)
            row["smem"] = s.group(1) if s else "0"
        if "ptxas failed" in line or "error" in line.lower():
            row["status"] = "FAILED"
    if row is not None:
        rows.append(row)
    return rows


def main():
    rows = summarise(open(sys.argv[1], encoding="utf-8", errors="replace").read())
    keys = ["kernel", "registers", "stack", "spill_stores", "spill_loads", "smem", "status"]
    print("\t".join(keys))
    for r in rows:
        print("\t".join(r[k] for k in keys))


if __name__ == "__main__":
    main()
