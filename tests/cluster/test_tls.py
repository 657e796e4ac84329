"""The job against a TLS-only Dask cluster on 127.0.0.1: works with the certificates, refused in one line without.

The test makes its own certificate authority and certificates (``cryptography``), starts
``dask scheduler --protocol tls`` and two ``dask worker`` processes with them, and runs ``astrodask run``.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from astrodask.cluster.watch import workers_now

pytestmark = pytest.mark.cluster

CLI = [sys.executable, "-m", "astrodask.cli"]
START_TIMEOUT = 60.0
_PROGRESS = re.compile(r"\r|\d+%\|")


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("ASTRODASK_DEBUG", "DASK_SCHEDULER_ADDRESS")}


# ------------------------------------------------------------------------------------------------ certificates


def make_pki(d: Path) -> dict[str, Path]:
    """A self-signed CA and one certificate + key signed by it for each of scheduler, worker and client."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=1)

    def key():
        return ec.generate_private_key(ec.SECP256R1())

    def pem_key(k) -> bytes:
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())

    ca_key = key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "astrodask test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    files = {"ca": d / "ca.pem"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for who in ("scheduler", "worker", "client"):
        k = key()
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"astrodask test {who}")]))
                .issuer_name(ca_name).public_key(k.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(end)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                               critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        files[f"{who}_cert"] = d / f"{who}.pem"
        files[f"{who}_key"] = d / f"{who}.key"
        files[f"{who}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{who}_key"].write_bytes(pem_key(k))
        os.chmod(files[f"{who}_key"], 0o600)
    return files


# ------------------------------------------------------------------------------------------------ cluster


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-n:])
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM then SIGKILL the process group of a process this module started."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:
            # the group may outlive its leader (the nanny's worker process)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            return


class TlsCluster:
    """``dask scheduler --protocol tls`` and two TLS ``dask worker`` processes, each in its own process group."""

    def __init__(self, d: Path, pki: dict[str, Path]):
        self.dir, self.pki = d, pki
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self.address = ""

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = self.dir / f"{name}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen([sys.executable, "-m", *args], stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=self.dir, start_new_session=True, env=_env())
        self.procs.append(proc)
        self.logs.append(log)
        return proc

    def _logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{_tail(p)}" for p in self.logs)

    def start(self, n_workers: int = 2) -> None:
        info = self.dir / "scheduler.json"
        p = self.pki
        sched = self._spawn("scheduler", [
            "distributed.cli.dask_scheduler", "--protocol", "tls", "--host", "127.0.0.1", "--port", "0",
            "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(info),
            "--tls-ca-file", str(p["ca"]), "--tls-cert", str(p["scheduler_cert"]),
            "--tls-key", str(p["scheduler_key"])])
        deadline = time.monotonic() + START_TIMEOUT
        while not self.address:
            if sched.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"TLS scheduler did not start:\n{self._logs()}")
            try:
                self.address = json.loads(info.read_text())["address"]
            except (OSError, ValueError, KeyError):
                time.sleep(0.1)
        assert self.address.startswith("tls://127.0.0.1:"), self.address
        for n in range(n_workers):
            self._spawn(f"worker-{n}", [
                "distributed.cli.dask_worker", self.address, "--host", "127.0.0.1", "--nthreads", "1",
                "--nworkers", "1", "--memory-limit", "2GiB", "--no-dashboard", "--name", f"tls-worker-{n}",
                "--local-directory", str(self.dir / f"worker-{n}"), "--death-timeout", "60",
                "--tls-ca-file", str(p["ca"]), "--tls-cert", str(p["worker_cert"]), "--tls-key", str(p["worker_key"])])
        self.wait_for_workers(n_workers)

    def security(self):
        from distributed.security import Security

        p = self.pki
        return Security(tls_ca_file=str(p["ca"]), tls_client_cert=str(p["client_cert"]),
                        tls_client_key=str(p["client_key"]), require_encryption=True)

    def wait_for_workers(self, n: int) -> None:
        from distributed import Client

        deadline = time.monotonic() + START_TIMEOUT
        with Client(self.address, security=self.security(), timeout=START_TIMEOUT, set_as_default=False) as c:
            while len(workers_now(c)) < n:
                if time.monotonic() > deadline or any(pr.poll() is not None for pr in self.procs):
                    raise RuntimeError(f"TLS workers did not connect:\n{self._logs()}")
                time.sleep(0.2)

    def close(self) -> None:
        for proc in reversed(self.procs):
            _stop(proc)


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    pki = make_pki(d)
    cluster = TlsCluster(d, pki)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


def _message_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip() and not _PROGRESS.search(ln)]


# ------------------------------------------------------------------------------------------------ tests


def test_cluster_really_requires_tls(tls_cluster):
    """Control: the scheduler speaks TLS only and checks client certificates against our CA."""
    assert tls_cluster.address.startswith("tls://")
    log = (tls_cluster.dir / "scheduler.log").read_text(errors="replace")
    assert "tls://127.0.0.1" in log
    from distributed import Client

    with Client(tls_cluster.address, security=tls_cluster.security(), timeout=30, set_as_default=False) as c:
        assert c.submit(sum, [1, 2, 3]).result() == 6
        assert all(a.startswith("tls://") for a in workers_now(c))


@pytest.mark.slow
def test_job_over_tls_succeeds(tls_cluster, small_csv_parts, tmp_path):
    p = tls_cluster.pki
    out = tmp_path / "out"
    with tls_cluster_client(tls_cluster) as c:
        before = c.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)
    r = subprocess.run([*CLI, "run", *map(str, small_csv_parts), "--out", str(out), "--epochs", "15", "--no-report",
                        "--scheduler", tls_cluster.address, "--tls-ca", str(p["ca"]),
                        "--tls-cert", str(p["client_cert"]), "--tls-key", str(p["client_key"]), "-q"],
                       capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    for stage in ("dataset", "model", "predictions", "evaluation"):
        assert (out / stage / "_SUCCESS").is_file(), stage
    ids = np.concatenate([pd.read_csv(s, usecols=["obj_ID"])["obj_ID"].to_numpy(np.uint64) for s in small_csv_parts])
    import pyarrow.parquet as pq

    got = pq.read_table(out / "predictions", columns=["obj_ID"]).column(0).to_numpy()
    assert len(got) == len(ids) and set(got.tolist()) == set(ids.tolist())
    assert len(np.unique(got)) == len(got)
    # the work really ran on the TLS cluster, not on a LocalCluster
    with tls_cluster_client(tls_cluster) as c:
        after = c.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)
    assert after > before


def tls_cluster_client(cluster: TlsCluster):
    from distributed import Client

    return Client(cluster.address, security=cluster.security(), timeout=30, set_as_default=False)


@pytest.mark.parametrize("variant", ["no-tls-options", "tcp-address", "tls-options-with-tcp-address",
                                     "certificates-of-another-ca"])
def test_job_without_the_right_tls_is_refused_in_one_line(tls_cluster, small_csv, tmp_path, variant):
    """Without the TLS files (or with a plain tcp:// address, or another CA's certificates) the job stops at
    once: exit 1, one ``astrodask: error:`` line naming the address and the TLS options, no traceback, no hang."""
    address = tls_cluster.address
    tls: list[str] = []
    if variant == "tcp-address":
        address = address.replace("tls://", "tcp://")
    elif variant == "tls-options-with-tcp-address":
        address = address.replace("tls://", "tcp://")
        p = tls_cluster.pki
        tls = ["--tls-ca", str(p["ca"]), "--tls-cert", str(p["client_cert"]), "--tls-key", str(p["client_key"])]
    elif variant == "certificates-of-another-ca":
        other = make_pki(tmp_path)
        tls = ["--tls-ca", str(other["ca"]), "--tls-cert", str(other["client_cert"]),
               "--tls-key", str(other["client_key"])]
    out = tmp_path / "out"
    t0 = time.monotonic()
    r = subprocess.run([*CLI, "run", str(small_csv), "--out", str(out), "--epochs", "5", "--scheduler", address,
                        *tls, "-q"], capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=180)
    elapsed = time.monotonic() - t0
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    assert r.returncode == 1, (r.returncode, r.stderr)
    lines = _message_lines(r.stderr)
    assert len(lines) == 1, r.stderr
    line = lines[0]
    assert line.startswith("astrodask: error: "), line
    assert address in line, line
    assert "--tls-ca" in line, line  # the fix: give (or drop) the TLS files
    assert not out.exists() or not any(out.iterdir()), "a refused job left outputs"
    assert elapsed < 45, f"refusal took {elapsed:.0f} s"
