use std::io::Cursor;

use globular_cluster::cidata;
use globular_cluster::secrets::{self, SeedFormat};
use globular_cluster::seed::Seed;
use globular_cluster::Role;
use globular_task::Task;

#[test]
fn cidata_image_passes_fsck_and_carries_the_seed() {
    let tmp = tempfile::tempdir().unwrap();
    super::bundle(tmp.path());
    let img = tmp.path().join("seed.img");
    let seed = secrets::write_seed(
        &tmp.path().join("cluster"),
        &super::seed_options("w1", Role::Worker, false),
        SeedFormat::Cidata,
        &img,
    )
    .unwrap();
    Task::new("checking the cidata filesystem", "fsck.vfat")
        .package("dosfstools")
        .args(["-n".as_ref(), img.as_os_str()])
        .run()
        .unwrap();
    let listing = Task::new("listing the cidata drive", "mdir")
        .package("mtools")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-i".as_ref(), img.as_os_str(), "::".as_ref()])
        .read_string()
        .unwrap();
    let lower = listing.to_lowercase();
    for name in ["meta-data", "user-data", "globular-seed"] {
        assert!(lower.contains(name), "{name} missing from {listing}");
    }
    let label = Task::new("reading the label", "mlabel")
        .package("mtools")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-s".as_ref(), "-i".as_ref(), img.as_os_str(), "::".as_ref()])
        .read_string()
        .unwrap();
    assert!(label.to_lowercase().contains("cidata"), "{label}");
    let copied = Task::new("reading the seed with mtools", "mtype")
        .package("mtools")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args([
            "-i".as_ref(),
            img.as_os_str(),
            "::globular-seed.yaml".as_ref(),
        ])
        .read_string()
        .unwrap();
    assert_eq!(Seed::parse(&copied, "mtype").unwrap(), seed);

    let bytes = std::fs::read(&img).unwrap();
    let text = cidata::read_seed(Cursor::new(bytes.clone()))
        .unwrap()
        .unwrap();
    assert_eq!(Seed::parse(&text, "image").unwrap(), seed);
    assert_eq!(
        cidata::label(Cursor::new(bytes.clone())).unwrap().trim(),
        "cidata"
    );
    // Same seed, same bytes.
    assert_eq!(cidata::image(&seed).unwrap(), bytes);
}

/// A drive with a large file beside the seed (a restore's snapshot): it
/// grows to hold it, passes fsck, and both are read back through a reader
/// that refuses every write.
#[test]
fn cidata_image_carries_a_large_file_read_without_writing() {
    let tmp = tempfile::tempdir().unwrap();
    super::bundle(tmp.path());
    let seed = secrets::write_seed(
        &tmp.path().join("cluster"),
        &super::seed_options("w1", Role::Worker, false),
        SeedFormat::Yaml,
        &tmp.path().join("seed.yaml"),
    )
    .unwrap();
    let big = tmp.path().join("big.db");
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&big, &data).unwrap();
    let image = cidata::image_with(&seed, &[("globular-restore.db", &big)]).unwrap();
    assert!(image.len() > data.len());
    let img = tmp.path().join("seed.img");
    std::fs::write(&img, &image).unwrap();
    Task::new("checking the cidata filesystem", "fsck.vfat")
        .package("dosfstools")
        .args(["-n".as_ref(), img.as_os_str()])
        .run()
        .unwrap();
    let open = || cidata::ReadOnly(std::fs::File::open(&img).unwrap());
    let text = cidata::read_seed(open()).unwrap().unwrap();
    assert_eq!(Seed::parse(&text, "image").unwrap(), seed);
    let mut copied = Vec::new();
    let n = cidata::copy_file(open(), "globular-restore.db", &mut copied, 1 << 30).unwrap();
    assert_eq!(n, Some(data.len() as u64));
    assert!(copied == data, "the file read back differs");
    // A limit below the file's size is an error, a missing file is None.
    assert!(cidata::copy_file(open(), "globular-restore.db", &mut Vec::new(), 1000).is_err());
    assert_eq!(
        cidata::copy_file(open(), "missing", &mut Vec::new(), 1000).unwrap(),
        None
    );
    // Names that would clash with the drive's own files are refused.
    assert!(cidata::image_with(&seed, &[("globular-seed.yaml", &big)]).is_err());
    assert!(cidata::image_with(&seed, &[("../x", &big)]).is_err());
    // The image file was never written to.
    assert!(std::fs::read(&img).unwrap() == image);
}
