//! Finding Fashion-MNIST, in order: `--data DIR` / `FASHION_MNIST_DIR`, the cache
//! `data/fashion-mnist/`, the Debian package's `/usr/share/datasets/fashion-mnist`, then a
//! download from the official mirror into the cache.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::idx::{Split, read_maybe_gzip};
use crate::{Error, Result};

/// Where the project keeps downloaded files (git-ignored).
pub const CACHE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fashion-mnist");
/// Where Debian's `dataset-fashion-mnist` package puts the files.
pub const DEBIAN_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// The official mirror.
pub const MIRROR: &str = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/";
/// Environment variable naming a data directory, like `--data`.
pub const DIR_ENV: &str = "FASHION_MNIST_DIR";
/// Environment variable that, set to anything but the empty string, forbids every install: no
/// download here, no `apt-get` or `rustup target add` in `xtask`; what is missing is an error
/// that says what installs it. The tests set it for the commands they start (`cargo xtask test`
/// installs everything in its first step), so a test run never installs anything.
pub const NO_INSTALL_ENV: &str = "FASHION_MLP_NO_INSTALL";

/// Whether [`NO_INSTALL_ENV`] allows installing what is missing.
pub fn installs_allowed() -> bool {
    std::env::var_os(NO_INSTALL_ENV).is_none_or(|value| value.is_empty())
}

/// The Fashion-MNIST files and the SHA-256 of their decompressed bytes.
pub const FILES: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    (
        "train-labels-idx1-ubyte",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    (
        "t10k-images-idx3-ubyte",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    (
        "t10k-labels-idx1-ubyte",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
];

/// How a user points a command at its data.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DataArgs {
    /// Directory with the four IDX files (plain or .gz) of Fashion-MNIST or of any other set of
    /// 28x28 images (MNIST, KMNIST, your own); other sets are not checksum-verified.
    /// Default: $FASHION_MNIST_DIR when set and not empty, then the cache data/fashion-mnist/,
    /// then /usr/share/datasets/fashion-mnist (apt-get install dataset-fashion-mnist), then a
    /// download from the official mirror.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
}

impl DataArgs {
    /// The directory the user named: `--data`, else `FASHION_MNIST_DIR` unless it is empty.
    pub fn dir(&self) -> Option<PathBuf> {
        self.data.clone().or_else(dir_from_env)
    }
}

/// `FASHION_MNIST_DIR`, unless it is unset or empty.
pub fn dir_from_env() -> Option<PathBuf> {
    std::env::var_os(DIR_ENV)
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
}

/// Which half of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The 60,000 training images.
    Train,
    /// The 10,000 test images.
    Test,
}

impl Part {
    fn files(self) -> [(&'static str, &'static str); 2] {
        match self {
            Part::Train => [FILES[0], FILES[1]],
            Part::Test => [FILES[2], FILES[3]],
        }
    }
}

/// Where the data came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `--data DIR` or `FASHION_MNIST_DIR`.
    Given(PathBuf),
    /// The project's cache.
    Cache(PathBuf),
    /// The Debian package.
    Debian(PathBuf),
    /// Freshly downloaded into the cache.
    Downloaded(PathBuf),
}

impl Source {
    /// The four files read from it (plain, or `.gz` where there is no plain one).
    pub fn files(&self) -> Vec<PathBuf> {
        FILES
            .iter()
            .map(|(name, _)| file_in(self.dir(), name))
            .collect()
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        match self {
            Source::Given(d) | Source::Cache(d) | Source::Debian(d) | Source::Downloaded(d) => d,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Given(d) => write!(f, "{} (given)", d.display()),
            Source::Cache(d) => write!(f, "{} (cache)", d.display()),
            Source::Debian(d) => {
                write!(f, "{} (Debian package dataset-fashion-mnist)", d.display())
            }
            Source::Downloaded(d) => write!(f, "{} (downloaded from {MIRROR})", d.display()),
        }
    }
}

/// Both halves of a dataset and where they came from.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Training images.
    pub train: Split,
    /// Test images.
    pub test: Split,
    /// Where they were found.
    pub source: Source,
    /// Whether every file matched Fashion-MNIST's published checksums.
    pub is_fashion_mnist: bool,
}

impl Dataset {
    /// Finds (downloading if needed and allowed: [`locate`]) and loads both halves.
    pub fn load(args: &DataArgs) -> Result<Self> {
        Self::load_from(locate(args.dir().as_deref())?)
    }

    /// [`Self::load`] without a download, whatever [`NO_INSTALL_ENV`] says: for tests, which
    /// install nothing.
    pub fn load_installed(args: &DataArgs) -> Result<Self> {
        Self::load_from(locate_installed(args.dir().as_deref())?)
    }

    fn load_from(source: Source) -> Result<Self> {
        let (train, train_verified) = load_part(&source, Part::Train)?;
        let (test, test_verified) = load_part(&source, Part::Test)?;
        Ok(Self {
            train,
            test,
            is_fashion_mnist: train_verified && test_verified,
            source,
        })
    }

    /// SHA-256 (lower-case hex) of every image and label, training split first: what a resumed
    /// run must find again.
    pub fn sha256(&self) -> String {
        let mut digest = Sha256::new();
        for split in [&self.train, &self.test] {
            digest.update(&split.images);
            digest.update(&split.labels);
        }
        hex(&digest.finalize())
    }
}

/// Finds the data directory in the documented order, downloading into the cache as a last
/// resort (unless [`NO_INSTALL_ENV`] is set). The error, when all fail, says how to get the
/// files.
pub fn locate(given: Option<&Path>) -> Result<Source> {
    locate_with(given, installs_allowed())
}

/// [`locate`] without a download, whatever [`NO_INSTALL_ENV`] says: for tests, which install
/// nothing.
pub fn locate_installed(given: Option<&Path>) -> Result<Source> {
    locate_with(given, false)
}

/// [`locate`], downloading only when `may_download` is true.
fn locate_with(given: Option<&Path>, may_download: bool) -> Result<Source> {
    if let Some(dir) = given {
        missing_files(dir).map_or(Ok(()), |missing| {
            Err(Error::NotFound(format!(
                "{}: no {missing} (or {missing}.gz) there; --data / {DIR_ENV} must name a \
                 directory with the four IDX files",
                dir.display()
            )))
        })?;
        return Ok(Source::Given(dir.to_owned()));
    }
    let cache = PathBuf::from(CACHE_DIR);
    if missing_files(&cache).is_none() {
        return Ok(Source::Cache(cache));
    }
    let debian = PathBuf::from(DEBIAN_DIR);
    if missing_files(&debian).is_none() {
        return Ok(Source::Debian(debian));
    }
    if !may_download {
        return Err(Error::NotFound(format!(
            "Fashion-MNIST is not in {} nor in {DEBIAN_DIR}, and nothing may be installed now \
             (a test, or {NO_INSTALL_ENV} set): `cargo xtask test` installs it first (or \
             apt-get install dataset-fashion-mnist)",
            cache.display()
        )));
    }
    eprintln!(
        "Fashion-MNIST is not in {} nor in {DEBIAN_DIR}; downloading from {MIRROR}",
        cache.display()
    );
    match download(&cache) {
        Ok(()) => Ok(Source::Downloaded(cache)),
        Err(error) => Err(Error::NotFound(format!(
            "Fashion-MNIST not found and the download failed ({error}).\nGet it one of these ways:\n  \
             - Debian/Ubuntu: sudo apt-get update && sudo apt-get install dataset-fashion-mnist \
             (installs {DEBIAN_DIR})\n  \
             - download the four *-ubyte.gz files from {MIRROR} into {}\n  \
             - point --data DIR or {DIR_ENV}=DIR at a directory that holds them",
            cache.display()
        ))),
    }
}

/// Loads one half; for data outside `--data`, checks the Fashion-MNIST checksums. Returns the
/// split and whether it matched Fashion-MNIST.
pub fn load_part(source: &Source, part: Part) -> Result<(Split, bool)> {
    let [(images_name, images_sha), (labels_name, labels_sha)] = part.files();
    let (images_path, images) = read_one(source.dir(), images_name)?;
    let (labels_path, labels) = read_one(source.dir(), labels_name)?;
    let must_verify = !matches!(source, Source::Given(_));
    let mut verified = true;
    for (path, bytes, expected) in [
        (&images_path, &images, images_sha),
        (&labels_path, &labels, labels_sha),
    ] {
        let found = sha256_hex(bytes);
        if found != expected {
            verified = false;
            if must_verify {
                return Err(Error::Checksum {
                    path: path.clone(),
                    expected,
                    found,
                });
            }
        }
    }
    let split = Split::from_bytes(&images_path, &images, &labels_path, &labels)?;
    Ok((split, verified))
}

/// The file `name` of `dir` (plain if present, else gzipped) and its bytes. Where both are
/// there, both are read, and a pair that disagrees is an error naming both: the plain one was
/// once used silently.
fn read_one(dir: &Path, name: &str) -> Result<(PathBuf, Vec<u8>)> {
    let path = file_in(dir, name);
    let bytes = read_maybe_gzip(&path)?;
    let gz = dir.join(format!("{name}.gz"));
    if path != gz && gz.is_file() && read_maybe_gzip(&gz)? != bytes {
        return Err(Error::Invalid {
            path,
            defect: format!(
                "differs from {} beside it (decompressed): remove the one that is wrong",
                gz.display()
            ),
        });
    }
    Ok((path, bytes))
}

/// The path of `name` in `dir`, plain if present, else gzipped.
fn file_in(dir: &Path, name: &str) -> PathBuf {
    let plain = dir.join(name);
    if plain.is_file() {
        plain
    } else {
        dir.join(format!("{name}.gz"))
    }
}

fn missing_files(dir: &Path) -> Option<&'static str> {
    FILES
        .iter()
        .map(|(name, _)| *name)
        .find(|name| !file_in(dir, name).is_file())
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Downloads the four files into `dir`, each verified before it is renamed into place.
fn download(dir: &Path) -> std::result::Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let config = ureq::Agent::config_builder()
        .timeout_resolve(Some(Duration::from_secs(10)))
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_global(Some(Duration::from_secs(600)))
        .build();
    let agent = ureq::Agent::new_with_config(config);
    for (name, expected) in FILES {
        let target = dir.join(format!("{name}.gz"));
        if target.is_file() {
            continue;
        }
        let url = format!("{MIRROR}{name}.gz");
        let mut response = agent.get(&url).call().map_err(|e| format!("{url}: {e}"))?;
        let length = response.body().content_length();
        let bar = indicatif::ProgressBar::new(length.unwrap_or(0)).with_style(
            indicatif::ProgressStyle::with_template(
                "{msg:28} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.set_message(format!("{name}.gz"));
        let mut gz = Vec::new();
        bar.wrap_read(response.body_mut().as_reader())
            .read_to_end(&mut gz)
            .map_err(|e| format!("{url}: {e}"))?;
        bar.finish();
        let mut decompressed = Vec::new();
        flate2::read::MultiGzDecoder::new(&gz[..])
            .read_to_end(&mut decompressed)
            .map_err(|e| format!("{url}: corrupt gzip data ({e})"))?;
        let found = sha256_hex(&decompressed);
        if found != expected {
            return Err(format!(
                "{url}: SHA-256 {found} of the decompressed bytes, expected {expected}"
            ));
        }
        crate::atomic::write_atomically(&target, &gz)
            .map_err(|e| format!("{}: {e}", target.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_input() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    /// Plain and `.gz` copies of one file that disagree are refused naming both; copies that
    /// agree are read.
    #[test]
    fn a_plain_and_a_gz_file_that_disagree_are_refused() {
        use std::io::Write as _;
        let dir = std::env::temp_dir().join(format!("fetch-pair-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let idx = |magic: u32, dims: &[u32], fill: u8| {
            let mut bytes = magic.to_be_bytes().to_vec();
            dims.iter().for_each(|d| bytes.extend(d.to_be_bytes()));
            let n: u32 = dims.iter().product();
            bytes.extend(std::iter::repeat_n(fill, n as usize));
            bytes
        };
        let images = idx(0x803, &[2, 28, 28], 7);
        let labels = idx(0x801, &[2], 3);
        for (name, _) in FILES {
            let bytes = if name.contains("images") {
                &images
            } else {
                &labels
            };
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        let gz = |bytes: &[u8]| {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), Default::default());
            encoder.write_all(bytes).unwrap();
            encoder.finish().unwrap()
        };
        let args = DataArgs {
            data: Some(dir.clone()),
        };
        std::fs::write(dir.join("t10k-labels-idx1-ubyte.gz"), gz(&labels)).unwrap();
        assert_eq!(Dataset::load(&args).unwrap().test.len(), 2);
        std::fs::write(
            dir.join("t10k-labels-idx1-ubyte.gz"),
            gz(&idx(0x801, &[2], 4)),
        )
        .unwrap();
        let message = Dataset::load(&args).unwrap_err().to_string();
        assert!(
            message.contains("t10k-labels-idx1-ubyte: differs from")
                && message.contains("t10k-labels-idx1-ubyte.gz"),
            "{message}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn given_dir_without_files_names_the_missing_file() {
        let message = locate(Some(Path::new("/nonexistent-dir")))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("/nonexistent-dir") && message.contains("train-images"),
            "{message}"
        );
    }
}
