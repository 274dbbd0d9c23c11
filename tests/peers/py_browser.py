"""A stand-in for a browser in login tests: GETs the URL given as its last argument and
follows every redirect (the authorization server's auto-approval, then mcpd's loopback
callback), with the Python standard library only. Exits 0 when the last page answered 2xx.

Usage: py_browser.py [--log FILE] URL
"""

import sys
import urllib.error
import urllib.request


def main():
    args = sys.argv[1:]
    log = None
    if len(args) >= 2 and args[0] == "--log":
        log = args[1]
        args = args[2:]
    url = args[-1]
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            status, final, body = response.status, response.geturl(), response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        status, final, body = e.code, e.geturl(), e.read().decode("utf-8", "replace")
    except Exception as e:  # noqa: BLE001 - report anything to the test
        status, final, body = 0, url, repr(e)
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"{status} {final}\n{body}\n")
    sys.exit(0 if 200 <= status < 300 else 1)


if __name__ == "__main__":
    main()
