//! Writing the group file: atomically (temporary file, fsync, rename), mode 0600, with a
//! fresh epoch and a random token.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use diaspora_proto::group::token_from_bytes;
use diaspora_proto::GroupFile;

/// 16 random bytes from the kernel.
pub fn random_bytes() -> std::io::Result<[u8; 16]> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b)
}

/// A fresh random token.
pub fn new_token() -> std::io::Result<String> {
    Ok(token_from_bytes(random_bytes()?))
}

/// A fresh epoch: time in nanoseconds mixed with random bits, never 0.
pub fn new_epoch() -> std::io::Result<u64> {
    let r = random_bytes()?;
    let mut x = [0u8; 8];
    x.copy_from_slice(&r[..8]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    Ok((now ^ (u64::from_le_bytes(x) & 0xffff)).max(1))
}

/// Writes `g` to `path` atomically with mode 0600.
pub fn write(path: &Path, g: &GroupFile) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "group.json".into());
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(g.to_json().as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}
