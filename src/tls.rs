//! One rustls crypto provider for the whole process: ring, which sqlx and
//! lettre already use. The S3 client's HTTP stack (reqwest) is built
//! without a provider of its own, so the tree holds no second one (aws-lc),
//! but then every reqwest client, ours or a test's, needs a process default
//! installed before it is built, or it panics.

/// Installs ring as the process default; harmless if one is already set.
pub fn install_crypto_provider() {
    // Err only means a default is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
