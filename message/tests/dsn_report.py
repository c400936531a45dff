#!/usr/bin/python3
"""Reads a DSN with Python's email package (an independent MIME parser) and prints what it
found as JSON: the top-level fields, the part types, and the delivery-status groups.

Usage: dsn_report.py MESSAGE_FILE
"""
import email
import email.policy
import json
import sys


def main():
    with open(sys.argv[1], "rb") as f:
        msg = email.message_from_binary_file(f, policy=email.policy.default)
    parts = msg.get_payload()
    out = {
        "from": str(msg["From"]),
        "to": str(msg["To"]),
        "subject": str(msg["Subject"]),
        "auto_submitted": str(msg["Auto-Submitted"]),
        "content_type": msg.get_content_type(),
        "report_type": msg.get_param("report-type"),
        "defects": [type(d).__name__ for d in msg.defects],
        "parts": [p.get_content_type() for p in parts],
        "text": parts[0].get_content(),
        # message/delivery-status payload: a list of header blocks, per message then per
        # recipient (RFC 3464 §2.1).
        "status": [
            {k.lower(): " ".join(str(v).split()) for k, v in block.items()}
            for block in parts[1].get_payload()
        ],
        "headers": parts[2].get_payload() if isinstance(parts[2].get_payload(), str) else None,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
