//! Tests of the test bed against the real servers it wraps: if these pass,
//! the registries, token server, proxy faults and images that the project's
//! tests rely on do what their docs say.

mod image;
mod proxy;
mod registry;
mod token;
