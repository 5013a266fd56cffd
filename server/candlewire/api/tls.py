"""TLS for both faces from certificate files, reloaded when the files change.

:class:`CertificateFiles` reads a certificate chain, its key and, for mutual
TLS, the CA that client certificates must chain to. Both faces reload them
without a restart, on the next handshake after the files changed (checked at
most once per ``check_interval`` seconds, by the files' size, modification
time and inode, so an atomic rename is seen too):

- gRPC through ``grpc.dynamic_ssl_server_credentials``, whose fetcher gRPC
  calls before each handshake;
- the HTTP port (Granian reads the files when its worker starts) through
  the gateway, which watches :attr:`CertificateFiles.reloads` and respawns
  its worker on a change.

A file that cannot be read at start is a :class:`ConfigError` naming its
setting; one that cannot be read later (half-written by a rotation) keeps the
certificates in use and logs the failure.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from pathlib import Path

import grpc

from candlewire.errors import ConfigError

__all__ = ["CertificateFiles"]

log = logging.getLogger(__name__)


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class CertificateFiles:
    """A certificate, its key and an optional client CA, kept current."""

    def __init__(
        self,
        cert_file: str,
        key_file: str,
        client_ca_file: str = "",
        *,
        check_interval: float = 1.0,
    ) -> None:
        self.cert_file = Path(cert_file)
        self.key_file = Path(key_file)
        self.client_ca_file = Path(client_ca_file) if client_ca_file else None
        self.check_interval = check_interval
        self._lock = threading.Lock()
        self._checked = -float("inf")
        self.reloads = 0
        self._identities = self._stat()
        self.cert, self.key, self.client_ca = self._read(initial=True)
        self._check_pair(self.cert, self.key)

    @property
    def mutual(self) -> bool:
        return self.client_ca_file is not None

    def _files(self) -> list[tuple[str, Path]]:
        files = [("tls_cert_file", self.cert_file), ("tls_key_file", self.key_file)]
        if self.client_ca_file is not None:
            files.append(("tls_client_ca_file", self.client_ca_file))
        return files

    def _stat(self) -> list[tuple[int, int, int] | None]:
        return [_identity(path) for _, path in self._files()]

    def _read(self, *, initial: bool) -> tuple[bytes, bytes, bytes | None]:
        read: list[bytes] = []
        for setting, path in self._files():
            try:
                data = path.read_bytes()
            except OSError as error:
                raise ConfigError(
                    f"{setting} (CANDLEWIRE_{setting.upper()}): cannot read {path}: "
                    f"{error.strerror or error}"
                ) from None
            if b"-----BEGIN" not in data:
                raise ConfigError(
                    f"{setting} (CANDLEWIRE_{setting.upper()}): {path} is not a PEM file"
                )
            read.append(data)
        return read[0], read[1], read[2] if len(read) > 2 else None

    def _check_pair(self, cert: bytes, key: bytes) -> None:
        """Load the pair into a throwaway context: a mismatch fails here, named."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
            if self.client_ca_file is not None:
                context.load_verify_locations(self.client_ca_file)
        except (ssl.SSLError, OSError) as error:
            raise ConfigError(
                "tls_cert_file / tls_key_file (CANDLEWIRE_TLS_CERT_FILE / "
                f"CANDLEWIRE_TLS_KEY_FILE): cannot use {self.cert_file} with {self.key_file}"
                f"{' and ' + str(self.client_ca_file) if self.client_ca_file else ''}: "
                f"{getattr(error, 'reason', None) or error}"
            ) from None

    def refresh(self) -> bool:
        """Re-read the files if they changed; whether the certificates changed."""
        now = time.monotonic()
        with self._lock:
            if now - self._checked < self.check_interval:
                return False
            self._checked = now
            identities = self._stat()
            if identities == self._identities:
                return False
            self._identities = identities
            try:
                cert, key, client_ca = self._read(initial=False)
                self._check_pair(cert, key)
            except ConfigError as error:
                log.error("TLS files changed but cannot be used (keeping the current): %s", error)
                return False
            if (cert, key, client_ca) == (self.cert, self.key, self.client_ca):
                return False
            self.cert, self.key, self.client_ca = cert, key, client_ca
            self.reloads += 1
            log.info("TLS certificate reloaded from %s", self.cert_file)
            return True

    # --- gRPC -----------------------------------------------------------------------------

    def _grpc_config(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(self.key, self.cert)], root_certificates=self.client_ca
        )

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """Credentials of the gRPC port, reloaded on change."""

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            try:
                return self._grpc_config() if self.refresh() else None
            except Exception:  # never fail a handshake over a reload
                log.exception("TLS reload failed")
                return None

        return grpc.dynamic_ssl_server_credentials(
            self._grpc_config(),
            fetch,  # type: ignore[arg-type]  # None: keep the current configuration
            require_client_authentication=self.mutual,
        )
