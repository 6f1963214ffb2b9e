#!/usr/bin/python3
"""OCI runtime shim: drop capabilities the host cannot grant, then exec runc.

Why: on sandboxed machines the capability bounding set lacks some capabilities
(CAP_SYS_RESOURCE here). runc fails `--privileged` containers with "unable to
apply caps: operation not permitted" because Docker asks for every capability.
This wrapper edits the OCI spec (config.json on create/run, the --process file
on exec) to keep only capabilities in our bounding set, and clamps rlimits to
our hard limits, then hands over to the real runc unchanged.
Installed by scripts/engine-up only when the bounding set is incomplete.
"""
import json
import os
import resource
import sys

REAL_RUNC = os.environ.get("CAPFIX_REAL_RUNC", "/usr/sbin/runc")
# Linux capability numbers -> names (include/uapi/linux/capability.h).
CAP_NAMES = [
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL",
    "SETGID", "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE",
    "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME",
    "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL",
    "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
    "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
]
RLIMITS = {"RLIMIT_NOFILE": resource.RLIMIT_NOFILE, "RLIMIT_NPROC": resource.RLIMIT_NPROC}


def allowed_caps():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapBnd:"):
                mask = int(line.split()[1], 16)
    return {"CAP_" + n for i, n in enumerate(CAP_NAMES) if mask >> i & 1}


def fix_process(proc):
    ok = allowed_caps()
    caps = proc.get("capabilities") or {}
    for kind, names in caps.items():
        if isinstance(names, list):
            caps[kind] = [c for c in names if c in ok]
    for rl in proc.get("rlimits") or []:
        res = RLIMITS.get(rl.get("type"))
        if res is None:
            continue
        _, hard = resource.getrlimit(res)
        if hard != resource.RLIM_INFINITY:
            rl["hard"] = min(rl.get("hard", hard), hard)
            rl["soft"] = min(rl.get("soft", hard), rl["hard"])


def rewrite(path, key=None):
    try:
        with open(path) as f:
            spec = json.load(f)
    except (OSError, ValueError):
        return
    fix_process(spec.get(key, {}) if key else spec)
    with open(path, "w") as f:
        json.dump(spec, f)


def main(argv):
    args = argv[1:]
    if "create" in args or "run" in args:
        bundle = "."
        for i, a in enumerate(args):
            if a in ("--bundle", "-b") and i + 1 < len(args):
                bundle = args[i + 1]
            elif a.startswith("--bundle="):
                bundle = a.split("=", 1)[1]
        rewrite(os.path.join(bundle, "config.json"), key="process")
    if "exec" in args:
        for i, a in enumerate(args):
            if a in ("--process", "-p") and i + 1 < len(args):
                rewrite(args[i + 1])
            elif a.startswith("--process="):
                rewrite(a.split("=", 1)[1])
    os.execv(REAL_RUNC, [REAL_RUNC] + args)


if __name__ == "__main__":
    main(sys.argv)
