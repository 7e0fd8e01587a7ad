"""A Google Cloud Storage stand-in on 127.0.0.1 for the gs:// workdir tests (tests/test_gcs.py).

Run by the test as a subprocess (`GcsEmulator`), never by pytest itself. The process hosts two
servers, both on the loopback interface only:
  * gcp-storage-emulator (in memory, one default bucket): the JSON / upload / download API that
    gcsfs, google-cloud-storage (orbax) and tensorstore reach through their emulator variables;
  * an HTTPS CONNECT proxy for TensorFlow's own GCS client (tf.io.gfile, so tf.summary and clu's
    writers), which has the Google host names compiled in and reads no emulator variable
    (/work/shared/REFERENCES-round2.md §15). It accepts CONNECT only to the Google storage hosts,
    terminates TLS with a certificate of a CA made for this run (`CURL_CA_BUNDLE`) and forwards
    each request to the emulator, rewriting the resumable-upload `Location` back to the https
    Google host so the upload's chunks come through the proxy too (chunks sent to the emulator
    directly are stored with their chunked-transfer framing).
The emulator is patched in this process (`_patch_emulator`): empty-object uploads (TF creates
directories that way) crashed its upload handlers, and its media downloads lacked the
x-goog-generation header tensorstore needs to read an object a second time.

The process stops by itself when its parent dies (PR_SET_PDEATHSIG, and a poll of its parent's
pid) or after --max-seconds, so a killed test leaves no server behind.

usage: gcs_emulator.py --bucket=NAME --dir=DIR [--max-seconds=S]
  prints one JSON line {"port", "proxy_port", "ca"} on stdout once both servers listen.
"""
from __future__ import annotations

import argparse
import datetime
import http.client
import http.server
import json
import os
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

# The hosts TF's GCS client talks to: JSON API and uploads (www), reads (storage), tokens (oauth2).
GOOGLE_HOSTS = ("www.googleapis.com", "storage.googleapis.com", "oauth2.googleapis.com")
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
               "trailer", "transfer-encoding", "upgrade", "content-length"}


# ------------------------------------------------------------------------------------------ the CA
def make_certificates(directory: str) -> tuple[str, str, str]:
  """A CA made for this run and a server certificate it signs for GOOGLE_HOSTS, written to
  `directory`. Returns (ca.pem, server.pem, server.key): ca.pem is what CURL_CA_BUNDLE names, so
  TF's curl trusts the proxy's TLS and nothing else changes trust outside the child process."""
  from cryptography import x509
  from cryptography.hazmat.primitives import hashes, serialization
  from cryptography.hazmat.primitives.asymmetric import ec
  from cryptography.x509.oid import NameOID

  now = datetime.datetime.now(datetime.timezone.utc)
  start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2)
  ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
  ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "autox3d_jax test CA")])
  ca_usage = x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                           key_encipherment=False, data_encipherment=False, key_agreement=False,
                           encipher_only=False, decipher_only=False)
  ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(ca_usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256()))
  server_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, GOOGLE_HOSTS[0])])
  cert = (x509.CertificateBuilder().subject_name(server_name).issuer_name(ca_name).public_key(key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
          .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in GOOGLE_HOSTS]), critical=False)
          .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
          .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
          .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
  pem = serialization.Encoding.PEM
  out = [os.path.join(directory, n) for n in ("ca.pem", "server.pem", "server.key")]
  blobs = (ca.public_bytes(pem), cert.public_bytes(pem),
           key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
  for path, data in zip(out, blobs):
    with open(path, "wb") as f:
      f.write(data)
  return out[0], out[1], out[2]


# --------------------------------------------------------------------------------------- the proxy
class _Forward(http.server.BaseHTTPRequestHandler):
  """One decrypted HTTP/1.1 connection from TF's client: each request goes to the emulator with
  its body de-chunked and a Content-Length, each answer comes back whole with a Content-Length."""
  protocol_version = "HTTP/1.1"
  upstream: tuple[str, int] = ("127.0.0.1", 0)   # the emulator; set per server (`_ConnectHandler`)

  def log_message(self, format, *args):   # pylint: disable=redefined-builtin
    pass

  def _body(self) -> bytes:
    if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
      data = b""
      while True:
        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
          while self.rfile.readline() not in (b"\r\n", b"\n", b""):   # trailers
            pass
          return data
        data += self.rfile.read(size)
        self.rfile.readline()
    return self.rfile.read(int(self.headers.get("Content-Length") or 0))

  def _forward(self):
    body = self._body()
    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
    headers["Content-Length"] = str(len(body))
    conn = http.client.HTTPConnection(*self.upstream, timeout=60)
    try:
      conn.request(self.command, self.path, body=body, headers=headers)
      answer = conn.getresponse()
      data = answer.read()
    finally:
      conn.close()
    self.send_response(answer.status, answer.reason)
    for k, v in answer.getheaders():
      if k.lower() in _HOP_BY_HOP:
        continue
      if k.lower() == "location":   # the emulator names itself by the Host header, over http
        parts = urllib.parse.urlsplit(v)
        if parts.hostname in GOOGLE_HOSTS:
          v = urllib.parse.urlunsplit(("https", parts.netloc.split(":")[0]) + tuple(parts[2:]))
      self.send_header(k, v)
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    if self.command != "HEAD":
      self.wfile.write(data)

  do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _forward


class _ConnectHandler(socketserver.BaseRequestHandler):
  """CONNECT host:443 for GOOGLE_HOSTS only: answer 200, take over the TLS, serve `_Forward` on it."""

  def handle(self):
    sock = self.request
    sock.settimeout(120)
    head = b""
    while b"\r\n\r\n" not in head:
      chunk = sock.recv(4096)
      if not chunk:
        return
      head += chunk
    line = head.split(b"\r\n", 1)[0].decode("latin-1").split()
    host = line[1].rsplit(":", 1)[0] if len(line) == 3 and line[0] == "CONNECT" else ""
    if host not in GOOGLE_HOSTS:
      sock.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
      return
    sock.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
    try:
      tls = self.server.tls.wrap_socket(sock, server_side=True)
    except (ssl.SSLError, OSError):
      return
    handler = type("_ForwardTo", (_Forward,), {"upstream": self.server.upstream})
    try:
      handler(tls, self.client_address, self.server)
    except (OSError, ssl.SSLError):
      pass


class ConnectProxy(socketserver.ThreadingTCPServer):
  """The loopback HTTPS CONNECT proxy (module doc). `port` is where it listens."""
  daemon_threads = True
  allow_reuse_address = True

  def __init__(self, upstream_port: int, cert: str, key: str):
    super().__init__(("127.0.0.1", 0), _ConnectHandler)
    self.upstream = ("127.0.0.1", upstream_port)
    self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    self.tls.load_cert_chain(cert, key)
    self.port = self.server_address[1]


# ------------------------------------------------------------------------------------ the emulator
def _patch_emulator() -> None:
  """Two fixes to gcp-storage-emulator, applied in this process before it serves:
  * an empty body reads as None there, and its media and XML upload handlers take len() of it
    (TypeError, a 500 that TF retries forever): read it as b'' in those two;
  * its media downloads carry no x-goog-generation header, which tensorstore reads as the
    object's generation (else 'Malformed StorageGeneration' on the second read of an OCDBT
    manifest): add x-goog-generation and x-goog-metageneration from the object's metadata."""
  from gcp_storage_emulator import server
  from gcp_storage_emulator.handlers import objects

  def empty_as_bytes(handler):
    def patched(request, response, storage, *args, **kwargs):
      if request.data is None:
        request._data = b""   # pylint: disable=protected-access  (Request caches its body here)
      return handler(request, response, storage, *args, **kwargs)
    return patched

  def with_generation(handler):
    def patched(request, response, storage, *args, **kwargs):
      handler(request, response, storage, *args, **kwargs)
      if response.status.value in (200, 206):
        try:
          obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
        except Exception:  # pylint: disable=broad-except  (no object, no header)
          return
        response["x-goog-generation"] = str(obj.get("generation") or 0)
        response["x-goog-metageneration"] = str(obj.get("metageneration") or 1)
    return patched

  replaced = {objects.xml_upload: empty_as_bytes(objects.xml_upload),
              objects.download: with_generation(objects.download)}
  objects._media_upload = empty_as_bytes(objects._media_upload)   # pylint: disable=protected-access
  objects.xml_upload, objects.download = replaced[objects.xml_upload], replaced[objects.download]
  # The routing table holds the handler functions themselves: point it at the patched ones.
  server.HANDLERS = tuple((regex, {m: replaced.get(h, h) for m, h in handlers.items()})
                          for regex, handlers in server.HANDLERS)


def _die_with_parent() -> None:
  """SIGTERM this process when its parent exits (Linux), and poll the parent as a fallback."""
  parent = os.getppid()
  try:
    import ctypes
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    pass
  if os.getppid() != parent:
    os._exit(0)

  def watch():
    while os.getppid() == parent:
      time.sleep(1)
    os._exit(0)
  threading.Thread(target=watch, daemon=True).start()


def serve(bucket: str, directory: str, max_seconds: float) -> None:
  """Start both servers, print their ports, and serve until SIGTERM, the parent's death or
  `max_seconds`."""
  import logging
  _die_with_parent()
  logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
  _patch_emulator()
  from gcp_storage_emulator.server import create_server
  emulator = create_server("127.0.0.1", 0, in_memory=True, default_bucket=bucket)
  emulator.start()
  port = emulator._api._httpd.server_port   # pylint: disable=protected-access  (port 0: the kernel's pick)
  ca, cert, key = make_certificates(directory)
  proxy = ConnectProxy(port, cert, key)
  threading.Thread(target=proxy.serve_forever, daemon=True).start()
  stop = threading.Event()
  signal.signal(signal.SIGTERM, lambda *_: stop.set())
  print(json.dumps({"port": port, "proxy_port": proxy.port, "ca": ca}), flush=True)
  stop.wait(max_seconds)
  proxy.shutdown()
  emulator.stop()


# ------------------------------------------------------------------------------- the test's handle
class GcsEmulator:
  """The emulator process, as the test starts and stops it.

  `GcsEmulator(directory, bucket)` starts `serve` in a subprocess (its stderr goes to
  directory/emulator.log: clients that close early make it print harmless BrokenPipe tracebacks)
  and waits for its ports. `env()` is what a child process needs in its environment, set before
  TF or tensorstore are imported, for every library of the chain to reach it; `objects(prefix)`
  and `read(name)` look at the bucket over plain HTTP, through none of those libraries."""

  def __init__(self, directory: str, bucket: str = "autox3d-test", max_seconds: float = 1800):
    os.makedirs(directory, exist_ok=True)
    self.bucket, self.log_path = bucket, os.path.join(directory, "emulator.log")
    self._log = open(self.log_path, "wb")
    self.process = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), f"--bucket={bucket}", f"--dir={directory}",
         f"--max-seconds={max_seconds}"], stdout=subprocess.PIPE, stderr=self._log, text=True)
    line = self.process.stdout.readline()   # the process prints its ports once both listen
    if not line:
      self.stop()
      raise RuntimeError(f"the GCS emulator did not start; see {self.log_path}")
    info = json.loads(line)
    self.port, self.proxy_port, self.ca = info["port"], info["proxy_port"], info["ca"]
    self.url = f"http://127.0.0.1:{self.port}"

  def env(self) -> dict[str, str]:
    """The environment variables that point every gs:// client of the chain at the emulator:
      orbax: STORAGE_EMULATOR_HOST (its google.cloud.storage client), TENSORSTORE_GCS_HTTP_URL
        (array data through tensorstore);
      etils.epath: EPATH_USE_TF=false (gcsfs rather than tf.io.gfile), STORAGE_EMULATOR_HOST,
        FSSPEC_GCS_TOKEN=anon, GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false (else each bucket probe
        waits 60 s for a storage-control call the emulator cannot answer);
      tf.io.gfile (clu's TensorBoard writer): HTTPS_PROXY / https_proxy (the CONNECT proxy),
        NO_PROXY / no_proxy (everything else reaches 127.0.0.1 directly), CURL_CA_BUNDLE (the CA
        made for this run), NO_GCE_CHECK=True (no metadata-server probe),
        GOOGLE_AUTH_TOKEN_FOR_TESTING (a token instead of credentials);
      GOOGLE_CLOUD_PROJECT: a project for the google.cloud.storage client."""
    proxy = f"http://127.0.0.1:{self.proxy_port}"
    return {"STORAGE_EMULATOR_HOST": self.url, "TENSORSTORE_GCS_HTTP_URL": self.url,
            "EPATH_USE_TF": "false", "FSSPEC_GCS_TOKEN": "anon", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
            "HTTPS_PROXY": proxy, "https_proxy": proxy, "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost", "CURL_CA_BUNDLE": self.ca, "NO_GCE_CHECK": "True",
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "dummy", "GOOGLE_CLOUD_PROJECT": "autox3d-test"}

  def objects(self, prefix: str = "") -> list[str]:
    """The names of the bucket's objects under `prefix`, sorted."""
    names, token = [], None
    while True:
      query = {"prefix": prefix, **({"pageToken": token} if token else {})}
      with urllib.request.urlopen(f"{self.url}/storage/v1/b/{self.bucket}/o?{urllib.parse.urlencode(query)}",
                                  timeout=30) as r:
        page = json.load(r)
      names += [item["name"] for item in page.get("items", [])]
      token = page.get("nextPageToken")
      if not token:
        return sorted(names)

  def read(self, name: str) -> bytes:
    """The bytes of object `name` (raises urllib.error.HTTPError 404 when there is none)."""
    quoted = urllib.parse.quote(name, safe="")
    with urllib.request.urlopen(f"{self.url}/download/storage/v1/b/{self.bucket}/o/{quoted}?alt=media",
                                timeout=30) as r:
      return r.read()

  def stop(self) -> None:
    if self.process.poll() is None:
      self.process.terminate()
      try:
        self.process.wait(10)
      except subprocess.TimeoutExpired:
        self.process.kill()
        self.process.wait(10)
    self.process.stdout.close()
    self._log.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.stop()


def free_port() -> int:
  """A local TCP port nothing listens on (bound, then released)."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--bucket", required=True)
  parser.add_argument("--dir", required=True)
  parser.add_argument("--max-seconds", type=float, default=1800)
  args = parser.parse_args()
  serve(args.bucket, args.dir, args.max_seconds)
