use globular_cluster::pki::{self, Ca, LeafSpec};
use globular_cluster::Role;
use globular_task::Task;

#[test]
fn openssl_verifies_issued_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::generate("demo").unwrap();
    let ca_path = tmp.path().join("ca.crt");
    std::fs::write(&ca_path, ca.cert_pem()).unwrap();
    let key = pki::generate_key_pem().unwrap();
    let csr = pki::verify_csr(&pki::create_csr(&key, "w1").unwrap()).unwrap();
    let issued = ca
        .issue(
            &csr.public_key_der,
            &LeafSpec::node("w1", Role::Worker, &["127.0.0.1".parse().unwrap()]),
        )
        .unwrap();
    let cert_path = tmp.path().join("w1.crt");
    std::fs::write(&cert_path, &issued.cert_pem).unwrap();
    let out = Task::new("verifying the node certificate", "openssl")
        .package("openssl")
        .args(["verify", "-CAfile"])
        .arg(&ca_path)
        .arg(&cert_path)
        .read_string()
        .unwrap();
    assert!(out.contains("OK"), "{out}");
    let text = Task::new("printing the certificate", "openssl")
        .args([
            "x509",
            "-noout",
            "-subject",
            "-ext",
            "subjectAltName,extendedKeyUsage",
            "-in",
        ])
        .arg(&cert_path)
        .read_string()
        .unwrap();
    assert!(text.contains("CN = w1"), "{text}");
    assert!(text.contains("globular:worker"), "{text}");
    assert!(text.contains("IP Address:127.0.0.1"), "{text}");
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
}

#[test]
fn ca_pin_matches_the_openssl_pipeline() {
    let ca = Ca::generate("demo").unwrap();
    let pubkey = Task::new("extracting the CA public key", "openssl")
        .args(["x509", "-pubkey", "-noout"])
        .stdin(ca.cert_pem())
        .read()
        .unwrap();
    let der = Task::new("converting it to DER", "openssl")
        .args(["pkey", "-pubin", "-outform", "der"])
        .stdin(pubkey)
        .read()
        .unwrap();
    let sum = Task::new("hashing it", "sha256sum")
        .stdin(der)
        .read_string()
        .unwrap();
    let hex = sum.split_whitespace().next().unwrap();
    assert_eq!(ca.pin(), format!("sha256:{hex}"));
}

#[test]
fn openssl_made_csr_is_accepted_and_a_bad_one_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("k.pem");
    Task::new("making a key", "openssl")
        .args([
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
        ])
        .arg(&key)
        .run()
        .unwrap();
    let csr = Task::new("making a CSR", "openssl")
        .args(["req", "-new", "-subj", "/CN=w7", "-key"])
        .arg(&key)
        .read_string()
        .unwrap();
    let verified = pki::verify_csr(&csr).unwrap();
    assert_eq!(verified.common_name, "w7");
    let broken = csr.replace(
        "-----BEGIN CERTIFICATE REQUEST-----\n",
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA",
    );
    assert!(pki::verify_csr(&broken).is_err());
}
