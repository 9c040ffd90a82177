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
