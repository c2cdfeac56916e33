//! The file switch: `Data.fs.old` becomes the old file and `Data.fs` the
//! packed one, with no moment without a `Data.fs`.

use std::path::Path;

use crate::error::{Error, Result};

use crate::filestorage::index_file::append_suffix;

/// Makes `Data.fs.old` the old file and `Data.fs` the packed one.
pub(super) fn switch_files(path: &Path, pack_path: &Path) -> Result<()> {
    let old_path = append_suffix(path, ".old");
    let renaming = |from: &Path, to: &Path, e| {
        Error::io(
            format!("renaming {} to {}", from.display(), to.display()),
            e,
        )
    };
    if let Err(e) = std::fs::hard_link(path, &old_path) {
        // Without hard links, do as ZODB does: a crash between the two
        // renames leaves the data in Data.fs.old and Data.fs.pack.
        tracing::warn!(
            "{}: cannot link to {}: {e}; renaming instead",
            path.display(),
            old_path.display()
        );
        std::fs::rename(path, &old_path).map_err(|e| renaming(path, &old_path, e))?;
        if let Err(e) = std::fs::rename(pack_path, path) {
            let _ = std::fs::rename(&old_path, path);
            return Err(renaming(pack_path, path, e));
        }
        return Ok(());
    }
    std::fs::rename(pack_path, path).map_err(|e| renaming(pack_path, path, e))
}
