//! Reading the PEM files ZEO's `<ssl>` sections name: certificate chains,
//! private keys, and the CA / client certificates and CRLs of
//! `authenticate` (a file, or a directory as OpenSSL's `capath`).

use std::io::Read;
use std::path::{Path, PathBuf};

use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::error::{Error, Result};

/// Largest certificate, key or CRL file read (a CRL of a large CA is a few
/// MiB; anything past this is not a TLS file).
pub const MAX_FILE_SIZE: u64 = 16 * 1024 * 1024;

/// Most files read from an `authenticate` directory.
pub const MAX_DIRECTORY_FILES: usize = 10_000;

/// The certificates and CRLs `authenticate` names.
#[derive(Debug, Clone, Default)]
pub struct Authorities {
    /// CA certificates and individually listed (pinned) peer certificates.
    pub certificates: Vec<CertificateDer<'static>>,
    /// Certificate revocation lists; when any is present, a peer's
    /// certificate must be covered by one from its issuer (OpenSSL's
    /// `VERIFY_CRL_CHECK_LEAF`, which ZEO turns on when CRLs are loaded).
    pub crls: Vec<CertificateRevocationListDer<'static>>,
}

/// Reads a file of at most [`MAX_FILE_SIZE`] bytes.
pub(crate) fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    let read_err = |source| Error::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    if size > MAX_FILE_SIZE {
        return Err(Error::TooLarge {
            path: path.to_owned(),
            size,
            limit: MAX_FILE_SIZE,
        });
    }
    let mut data = Vec::with_capacity(size as usize);
    // The take() bounds a file that grows while it is read.
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut data)
        .map_err(read_err)?;
    if data.len() as u64 > MAX_FILE_SIZE {
        return Err(Error::TooLarge {
            path: path.to_owned(),
            size: data.len() as u64,
            limit: MAX_FILE_SIZE,
        });
    }
    Ok(data)
}

/// Every PEM item of a file.
fn pem_items(path: &Path, data: &[u8]) -> Result<Vec<rustls_pemfile::Item>> {
    let mut reader = data;
    rustls_pemfile::read_all(&mut reader)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::BadPem {
            path: path.to_owned(),
            reason: format!("{e:?}"),
        })
}

/// The certificate chain of `path`, leaf first.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let data = read_bounded(path)?;
    let certs: Vec<_> = pem_items(path, &data)?
        .into_iter()
        .filter_map(|item| match item {
            rustls_pemfile::Item::X509Certificate(c) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(Error::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key of `path`. A PKCS#8 key encrypted with a password
/// (`BEGIN ENCRYPTED PRIVATE KEY`, what `openssl pkcs8 -topk8` writes) is
/// decrypted with the first line of `password_file`; any other encrypted
/// key is refused by name.
pub fn load_private_key(
    path: &Path,
    password_file: Option<&Path>,
) -> Result<PrivateKeyDer<'static>> {
    let data = read_bounded(path)?;
    let text = String::from_utf8_lossy(&data);
    // Legacy OpenSSL encryption puts headers in an `RSA PRIVATE KEY` block.
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(Error::LegacyEncryptedKey {
            path: path.to_owned(),
        });
    }
    if text.contains("BEGIN ENCRYPTED PRIVATE KEY") {
        let Some(password_file) = password_file else {
            return Err(Error::EncryptedKey {
                path: path.to_owned(),
            });
        };
        return decrypt_pkcs8(path, &text, &read_password(password_file)?);
    }
    pem_items(path, &data)?
        .into_iter()
        .find_map(|item| match item {
            rustls_pemfile::Item::Pkcs1Key(k) => Some(PrivateKeyDer::Pkcs1(k)),
            rustls_pemfile::Item::Pkcs8Key(k) => Some(PrivateKeyDer::Pkcs8(k)),
            rustls_pemfile::Item::Sec1Key(k) => Some(PrivateKeyDer::Sec1(k)),
            _ => None,
        })
        .ok_or_else(|| Error::NoKey {
            path: path.to_owned(),
        })
}

/// The first line of a password file, without its line end.
fn read_password(path: &Path) -> Result<Vec<u8>> {
    let data = read_bounded(path)?;
    let line = data.split(|b| *b == b'\n').next().unwrap_or_default();
    Ok(line.strip_suffix(b"\r").unwrap_or(line).to_vec())
}

/// Decrypts the `ENCRYPTED PRIVATE KEY` block of `text` (PBES2).
fn decrypt_pkcs8(path: &Path, text: &str, password: &[u8]) -> Result<PrivateKeyDer<'static>> {
    use pkcs8::der::Decode;
    let bad = |reason: String| Error::BadPem {
        path: path.to_owned(),
        reason,
    };
    let begin = text
        .find("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        .unwrap_or_default();
    let (label, doc) =
        pkcs8::der::Document::from_pem(&text[begin..]).map_err(|e| bad(e.to_string()))?;
    if label != "ENCRYPTED PRIVATE KEY" {
        return Err(bad(format!(
            "expected an ENCRYPTED PRIVATE KEY block, found {label}"
        )));
    }
    let info =
        pkcs8::EncryptedPrivateKeyInfo::from_der(doc.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let secret = info.decrypt(password).map_err(|_| Error::WrongPassword {
        path: path.to_owned(),
    })?;
    Ok(PrivateKeyDer::Pkcs8(secret.as_bytes().to_vec().into()))
}

/// The certificates and CRLs of `authenticate`: a PEM file, or every
/// regular file of a directory that holds PEM certificates or CRLs (other
/// files are skipped, as OpenSSL skips them in a `capath`).
pub fn load_authorities(path: &Path) -> Result<Authorities> {
    let mut found = Authorities::default();
    let is_dir = std::fs::metadata(path)
        .map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?
        .is_dir();
    if is_dir {
        for file in directory_files(path)? {
            let Ok(data) = read_bounded(&file) else {
                continue;
            };
            // Directories hold other files (OpenSSL's hash links, READMEs):
            // only well-formed PEM files count.
            if let Ok(items) = pem_items(&file, &data) {
                add_items(&mut found, items);
            }
        }
    } else {
        let data = read_bounded(path)?;
        add_items(&mut found, pem_items(path, &data)?);
    }
    if found.certificates.is_empty() {
        return Err(Error::NoAuthorities {
            path: path.to_owned(),
        });
    }
    Ok(found)
}

fn add_items(found: &mut Authorities, items: Vec<rustls_pemfile::Item>) {
    for item in items {
        match item {
            rustls_pemfile::Item::X509Certificate(c) => found.certificates.push(c),
            rustls_pemfile::Item::Crl(c) => found.crls.push(c),
            _ => {}
        }
    }
}

/// The regular files of a directory, sorted by name, at most
/// [`MAX_DIRECTORY_FILES`].
fn directory_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let read_err = |source| Error::Read {
        path: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        if path.is_file() {
            if files.len() == MAX_DIRECTORY_FILES {
                tracing::warn!(
                    dir = %dir.display(),
                    "authenticate directory has more than {MAX_DIRECTORY_FILES} files; the rest are ignored"
                );
                break;
            }
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}
