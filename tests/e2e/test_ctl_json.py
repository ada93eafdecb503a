"""Issue 13: `--json` on every hookerctl command. What changes something
(deploy, undeploy, policy add|del|reload) answers in one JSON document on
stdout; a refusal is a JSON object with "error" and a non-zero exit, as are
hookerctl's own errors (no hookerd, a bad command line)."""
import json
import subprocess

import pytest

from hookerd import HOOKERCTL, Hookerd


def ctl_json(control, *args):
    """hookerctl ... --json: (exit code, its stdout as JSON). Fails if stdout
    is not one JSON object."""
    r = subprocess.run([HOOKERCTL, "--control", control, *args, "--json"], capture_output=True,
                       text=True, timeout=10)
    try:
        doc = json.loads(r.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"hookerctl {' '.join(args)} --json: not JSON: {r.stdout!r} {r.stderr!r}")
    assert isinstance(doc, dict), doc
    return r.returncode, doc


def ok(control, *args):
    rc, doc = ctl_json(control, *args)
    assert rc == 0 and "error" not in doc, (args, rc, doc)
    return doc


def refused(control, *args, says):
    rc, doc = ctl_json(control, *args)
    assert rc != 0 and says in doc.get("error", ""), (args, rc, doc)
    return doc


@pytest.fixture
def hd(bed, tmp_path):
    conf = tmp_path / "hookerd.toml"
    conf.write_text('[[rule]]\nport = 5330\nmech = "udp"\n')
    d = Hookerd(bed.a, [5201], eager=False, extra=["--config", str(conf)]).start()
    yield d, conf
    assert d.stop() == 0, d.stderr()


def test_deploy_and_undeploy_answer_json(hd):
    d, _ = hd
    doc = ok(d.control, "deploy", "udp")
    assert doc["deployed"] == "udp"
    assert [m["state"] for m in doc["mechanisms"] if m["name"] == "udp"] == ["deployed"]
    refused(d.control, "deploy", "udp", says="deploy udp: already deployed")
    refused(d.control, "deploy", "warp", says="deploy warp: unknown mechanism")
    doc = ok(d.control, "undeploy", "udp")
    assert doc["undeployed"] == "udp" and doc["connections_reset"] == 0
    refused(d.control, "undeploy", "warp", says="undeploy warp: unknown mechanism")


def test_policy_add_del_reload_answer_json(hd):
    d, conf = hd
    doc = ok(d.control, "policy", "add", "5202=udplite")
    assert doc["added"] == "5202=udplite"
    assert 5202 in [r["port"] for r in doc["policy"]]
    refused(d.control, "policy", "add", "70000", says="policy add 70000: ")
    doc = ok(d.control, "policy", "del", "5202")
    assert doc["removed"] == "5202=udplite"
    refused(d.control, "policy", "del", "5999", says="policy del 5999: ")

    conf.write_text('[[rule]]\nport = 5331\nmech = "udp"\n\n[[rule]]\nsrc = "10.0.0.0/8"\n'
                    'mech = "never"\n')
    doc = ok(d.control, "policy", "reload")
    assert doc["reloaded"] == str(conf) and [r["line"] for r in doc["rules"]] == [1, 5]
    conf.write_text('[[rule]]\nport = 5331\nmech = "warp"\n')
    refused(d.control, "policy", "reload", says=f"{conf}:3: mech: unknown mechanism 'warp'")
    # The refused file changed nothing.
    assert [r["line"] for r in ok(d.control, "policy", "list")["file_rules"]] == [1, 5]


def test_hookerctls_own_errors_are_json_too(tmp_path):
    refused(str(tmp_path / "none.sock"), "deploy", "udp", says="no hookerd answers on")
    rc, doc = ctl_json(str(tmp_path / "none.sock"), "policy", "add")
    assert rc == 2 and "rule is required" in doc["error"], doc
    # --json before the command works the same.
    r = subprocess.run([HOOKERCTL, "--json", "--control", str(tmp_path / "none.sock"), "status"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "no hookerd answers on" in json.loads(r.stdout)["error"], r
