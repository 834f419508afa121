#!/usr/bin/env bash
# The Kubernetes examples (etc/kubernetes): they parse, carry what running mtlsgw there
# needs (an init container that runs `mtlsgw check`, /healthz probes, a locked-down
# securityContext, the config, identity and trust mounts, a cert-manager Certificate for
# the Secret mounted), and each ConfigMap's config passes `mtlsgw check` with the test
# PKI laid out exactly where the manifests mount it.
source "$(dirname "$0")/lib.sh"
if [ "$(id -u)" != 0 ]; then
    fail "this test plays pods with podman and makes a user: it must run as root"
    finish
    exit 1
fi
# The DaemonSet's config switches to user mtlsgw (the image has it, uid 10001); `check`
# looks it up on this host, so the test makes one if there is none.
if ! getent passwd mtlsgw > /dev/null; then
    useradd --system --no-create-home --shell /usr/sbin/nologin mtlsgw; UNDO+=("userdel mtlsgw")
fi
make_pki
K8S=$ROOT/etc/kubernetes
/usr/bin/python3 - "$K8S" "$WORK/layout" "$PKI" > "$WORK/k8s.out" 2>&1 <<'PY' || true
import os, sys, yaml
k8s, layout, pki = sys.argv[1:4]
docs = []
for f in sorted(os.listdir(k8s)):
    if f.endswith(".yaml"):
        with open(os.path.join(k8s, f)) as fh:
            docs += [(f, d) for d in yaml.safe_load_all(fh) if d]
def say(ok, what):
    print(("ok - " if ok else "not ok - ") + what)
by_kind = {}
for f, d in docs:
    by_kind.setdefault(d["kind"], []).append((f, d))
say(len(docs) >= 5, "manifests parse: %d documents (%s)" % (len(docs), ", ".join(sorted(by_kind))))
configmaps = {d["metadata"]["name"]: d for _, d in by_kind.get("ConfigMap", [])}
secrets = {d["spec"]["secretName"] for _, d in by_kind.get("Certificate", [])}
consumer_folders = {}
for f, d in by_kind.get("Pod", []):
    spec = d["spec"]
    if any(c["image"].startswith("localhost/mtlsgw:") for c in spec["containers"]):
        continue
    # A consumer of the DaemonSet: its own socket folder, read-only, its group, no more.
    name = "consumer Pod %s" % d["metadata"]["name"]
    vols = {v["name"]: v for v in spec["volumes"]}
    host = [(m, vols[m["name"]]["hostPath"]["path"]) for c in spec["containers"] for m in c.get("volumeMounts", [])
            if "hostPath" in vols[m["name"]]]
    say(len(host) == 1 and host[0][1].startswith("/run/mtlsgw/") and host[0][0].get("readOnly") is True,
        name + ": mounts one consumer socket folder of the gateway, read-only")
    say(bool(spec.get("securityContext", {}).get("supplementalGroups")), name + ": a supplemental group opens its sockets")
    say(spec.get("securityContext", {}).get("runAsNonRoot") is True, name + ": runAsNonRoot")
    if host:
        consumer_folders.setdefault(host[0][1], []).append(d["metadata"]["name"])
say(len(consumer_folders) >= 2 and all(len(v) == 1 for v in consumer_folders.values()),
    "each consumer has a folder of its own: %s" % consumer_folders)
for kind in ("DaemonSet", "Pod"):
    for f, d in by_kind.get(kind, []):
        spec = d["spec"]["template"]["spec"] if kind == "DaemonSet" else d["spec"]
        if not any(c["image"].startswith("localhost/mtlsgw:") for c in spec["containers"]):
            continue
        name = "%s %s" % (kind, d["metadata"]["name"])
        psc = spec.get("securityContext", {})
        say(psc.get("runAsNonRoot") is True, name + ": runAsNonRoot")
        gw = [c for c in spec["containers"] if c["image"].startswith("localhost/mtlsgw:")]
        say(len(gw) == 1 and gw[0]["command"][:2] == ["mtlsgw", "run"], name + ": a container runs mtlsgw run")
        inits = spec.get("initContainers", [])
        say(any(c["command"][:2] == ["mtlsgw", "check"] for c in inits), name + ": an init container runs mtlsgw check")
        for c in gw + inits:
            sc = c.get("securityContext", {})
            add = sc.get("capabilities", {}).get("add")
            say(sc.get("allowPrivilegeEscalation") is False and sc.get("readOnlyRootFilesystem") is True
                and sc.get("capabilities", {}).get("drop") == ["ALL"]
                and (not add or (sorted(add) == ["CHOWN", "SETGID", "SETUID"] and sc.get("runAsUser") == 0)),
                "%s/%s: no privilege escalation, read-only root, every capability dropped%s" % (
                    name, c["name"], " but CHOWN, SETUID, SETGID to start as root" if add else ""))
        for v in spec["volumes"]:
            if "secret" in v:
                say(v["secret"].get("optional") is False, "%s: secret volume %s says optional: false" % (name, v["name"]))
        for probe in ("livenessProbe", "readinessProbe"):
            p = gw[0].get(probe, {}).get("httpGet", {})
            say(p.get("path") == "/healthz", "%s: %s on /healthz" % (name, probe))
        vols = {v["name"]: v for v in spec["volumes"]}
        mounts = gw[0]["volumeMounts"]
        conf_path = gw[0]["command"][-1]
        say(any(conf_path.startswith(m["mountPath"] + "/") and "configMap" in vols[m["name"]] for m in mounts),
            name + ": the config comes from a ConfigMap mount")
        ids = [m for m in mounts if "secret" in vols[m["name"]]]
        say(bool(ids) and all(vols[m["name"]]["secret"]["secretName"] in secrets for m in ids),
            name + ": identities are cert-manager Certificate Secrets, mounted")
        # Lay out what the volumes would hold under layout/<name>/, then check the config.
        root = os.path.join(layout, d["metadata"]["name"])
        for m in mounts:
            v, dst = vols[m["name"]], root + m["mountPath"]
            os.makedirs(dst, exist_ok=True)
            if "configMap" in v:
                cm = configmaps.get(v["configMap"]["name"])
                data = cm["data"] if cm else {"ca.crt": open(os.path.join(pki, "server-trust.crt")).read()}
                for k, text in data.items():
                    with open(os.path.join(dst, k), "w") as out:
                        out.write(text)
            elif "secret" in v:
                who = "billing" if "billing" in v["secret"]["secretName"] else "ops"
                for k, src in (("tls.crt", who + ".crt"), ("tls.key", who + ".key")):
                    with open(os.path.join(pki, src)) as i, open(os.path.join(dst, k), "w") as out:
                        out.write(i.read())
                    os.chmod(os.path.join(dst, k), 0o600)
        print("CONF %s %s" % (d["metadata"]["name"], root + conf_path))
PY
cat "$WORK/k8s.out" | grep -v '^CONF '
PASSES=$((PASSES + $(grep -c '^ok - ' "$WORK/k8s.out" || true)))
FAILS=$((FAILS + $(grep -c '^not ok - ' "$WORK/k8s.out" || true)))
check "the manifest checks ran" grep -q '^CONF ' "$WORK/k8s.out"
while read -r _ name conf; do
    out=$("$MTLSGW" check -c "$conf" 2>&1) && rc=0 || rc=$?
    expect_eq "mtlsgw check passes on $name's config, with the files where the manifests mount them" "0" "$rc"
    [ "$rc" = 0 ] || echo "$out"
    check "... and warns about nothing" bash -c "! grep -q 'warning' <<< '$out'"
    if [ "$name" = mtlsgw ]; then
        out=$("$MTLSGW" identity list -c "$conf" 2>&1 || true)
        expect_contains "identity list names the listeners whose clients get each identity" "(listener orders, node)" "$out"
        expect_contains "... billing's only through billing's socket" "(listener billing)" "$out"
        out=$("$MTLSGW" identity list -c "$conf" --json 2>&1 || true)
        expect_contains "identity list --json: listeners per rule" '"listeners": {' "$out"
    fi
done < <(grep '^CONF ' "$WORK/k8s.out")
finish
