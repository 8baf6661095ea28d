"""A --prefix reports/ credential at the file quota: the refusal must not quote the tenant's usage."""

from common import Client, token

c = Client(token("acme", "--prefix", "reports/"))
print("narrowed, new deep file:", c.call("write_file", {"path": "reports/n1/n2/n3/x.txt", "content": "x"}))
print("narrowed, big file:", c.call("write_file", {"path": "reports/big.txt", "content": "x" * 99000}))
print("narrowed, sql:", c.call("send_email", {"to": "a@example.com", "subject": "s", "body": "x" * 2_000_000}))
full = Client(token("acme"))
print("full credential, new deep file:", full.call("write_file", {"path": "reports/n1/n2/n3/x.txt", "content": "x"}))
