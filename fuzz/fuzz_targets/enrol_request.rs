//! Enrolment requests as the origin reads them: the JSON body, then the CSR (PEM, X.509
//! parsing and signature check) that the deployment CA would sign. Never panics; a CSR that is
//! accepted yields a certificate for the CA's chosen identity only.
#![no_main]
use std::sync::OnceLock;
use std::time::Duration;

use courseway_admin_proto::enrol::EnrolRequest;
use courseway_content::NodeName;
use courseway_net::{DeploymentCa, PeerIdentity, Validity};
use courseway_proto::Role;
use libfuzzer_sys::fuzz_target;

fn ca() -> &'static DeploymentCa {
    static CA: OnceLock<DeploymentCa> = OnceLock::new();
    CA.get_or_init(|| DeploymentCa::generate("fuzz").expect("a CA"))
}

fn issue(csr: &str) {
    let name = NodeName::new("village-fuzz").unwrap();
    let v = Validity::starting_now(Duration::from_secs(3600));
    if let Ok(cert) = ca().issue_for_request(Role::Station, &name, csr, v) {
        let identity = PeerIdentity::from_certificate_der(&cert).expect("an issued certificate has an identity");
        assert_eq!(identity, PeerIdentity::new(Role::Station, name));
        ca().certificate().verify_issued(&cert).expect("an issued certificate verifies");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    if selector & 1 == 0 {
        if let Ok(request) = EnrolRequest::parse(rest) {
            issue(&request.csr);
        }
    } else {
        issue(&String::from_utf8_lossy(rest));
    }
});
