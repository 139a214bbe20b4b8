"""The baseline the tap is measured against: a plain sequential read loop.

Gets a token, pages through one Closum list with ``requests`` one page after
another and prints each record as a JSON line. No retries, no schema, no
state: the least work a correct reader can do.

    python benchmarks/baseline_read_loop.py API_URL USERNAME PASSWORD PATH [PAGE_SIZE]
"""

from __future__ import annotations

import json
import sys

import requests


def main() -> None:
    """Read the list named on the command line and print its records."""
    api_url, username, password, path, *rest = sys.argv[1:]
    page_size = int(rest[0]) if rest else 100
    session = requests.Session()
    token = session.post(f"{api_url}/token", json={"api_username": username, "api_pw": password}, timeout=60)
    token.raise_for_status()
    session.headers["Authorization"] = "Bearer " + token.json()["data"]["token"]
    out = sys.stdout
    page = 1
    while True:
        response = session.get(f"{api_url}{path}", params={"limit": page_size, "page": page}, timeout=60)
        response.raise_for_status()
        body = response.json()
        for record in body["data"]:
            out.write(json.dumps(record))
            out.write("\n")
        if not body["pagination"]["has_next_page"]:
            break
        page += 1
    out.flush()


if __name__ == "__main__":
    main()
