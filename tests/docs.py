#!/usr/bin/env python3
"""The manual pages, etc/mtlsgw.conf and --help stay in step with the code.

Every setting the config loader knows (the rows of the settings table, policy/settings.c) must be described
in mtlsgw.conf(5) and appear in etc/mtlsgw.conf; every command main.c dispatches (and each
identity subcommand) and every long option of options.c must be in mtlsgw(8) and in
`mtlsgw --help` or the command's own --help. Fails with the list of what is missing.
"""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MTLSGW = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "mtlsgw")


def read(path):
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


settings = set(re.findall(r'^\s*(?:INT|INT_CUSTOM|OF|BOOL)\("[a-z_.\[\]]*", "([a-z_0-9]+)"', read("policy/settings.c"), re.M))
conf5, conf, man8 = read("etc/man/mtlsgw.conf.5.scd"), read("etc/mtlsgw.conf"), read("etc/man/mtlsgw.8.scd")
missing = []
# Each integer's default, as the table has it, is the one mtlsgw.conf(5) gives: "*name* [default".
src = read("policy/settings.c")
for name, lo, hi, default in re.findall(r'^\s*INT\("[a-z_.\[\]]*", "([a-z_0-9]+)", ([^,]+), ([^,]+), ([^,]+),', src, re.M):
    if not re.search(r"\*%s\* \[%s\b" % (re.escape(name), re.escape(default.strip())), conf5):
        missing.append("mtlsgw.conf(5) does not give setting %s its default [%s]" % (name, default.strip()))
for name, default in re.findall(r'^\s*BOOL\("[a-z_.\[\]]*", "([a-z_0-9]+)", ([01]),', src, re.M):
    word = "true" if default == "1" else "false"
    if not re.search(r"\*%s\* \[%s\]" % (re.escape(name), word), conf5):
        missing.append("mtlsgw.conf(5) does not give setting %s its default [%s]" % (name, word))
for s in sorted(settings):
    if not re.search(r"\*%s\*" % re.escape(s), conf5):
        missing.append("mtlsgw.conf(5) does not describe setting %s" % s)
    if not re.search(r"\b%s\b" % re.escape(s), conf):
        missing.append("etc/mtlsgw.conf does not show setting %s" % s)

main_c, identity_c, options_c = read("gateway/cli/main.c"), read("gateway/cli/identity.c"), read("gateway/cli/options.c")
commands = set(re.findall(r'strcmp\(cmd, "([a-z]+)"\)', main_c))
subcommands = set(re.findall(r'strcmp\(sub, "([a-z]+)"\)', identity_c))
options = set(re.findall(r'\{"([a-z-]+)", (?:required|no)_argument', options_c)) - {"help", "config"}
top_help = subprocess.run([MTLSGW, "--help"], capture_output=True, text=True).stdout
helps = top_help + "".join(
    subprocess.run([MTLSGW] + c.split() + ["--help"], capture_output=True, text=True).stdout
    for c in sorted(commands - {"version"}))
for c in sorted(commands):
    if not re.search(r"\*%s\*" % c, man8):
        missing.append("mtlsgw(8) does not describe command %s" % c)
    if not re.search(r"^\s+%s\b" % c, top_help, re.M):
        missing.append("mtlsgw --help does not list command %s" % c)
for c in sorted(subcommands):
    if not re.search(r"\*identity\*? \*?%s\*" % c, man8):
        missing.append("mtlsgw(8) does not describe command identity %s" % c)
    if "identity %s" % c not in top_help:
        missing.append("mtlsgw --help does not list command identity %s" % c)
for o in sorted(options):
    if "--%s" % o not in man8:
        missing.append("mtlsgw(8) does not describe option --%s" % o)
    if "--%s" % o not in helps:
        missing.append("no --help mentions option --%s" % o)
if len(settings) < 40 or len(commands) < 6 or len(options) < 8:
    missing.append("the extraction found too little (%d settings, %d commands, %d options): the source changed shape?"
                   % (len(settings), len(commands), len(options)))
for m in missing:
    print("not ok -", m)
print("docs: %d settings, %d commands, %d subcommands, %d options checked; %d missing"
      % (len(settings), len(commands), len(subcommands), len(options), len(missing)))
sys.exit(1 if missing else 0)
