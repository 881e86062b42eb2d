// Package oci holds the vocabulary of the OCI image and distribution
// specifications that the rest of Sluice speaks: media types, digests,
// repository names and tags, and the parsing and validation of manifests.
//
// It knows nothing about storage or HTTP; it turns untrusted bytes and
// strings into checked values, or into errors that say what is wrong.
package oci
