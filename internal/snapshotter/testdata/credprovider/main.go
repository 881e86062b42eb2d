// Command credprovider is a kubelet credential provider plugin for tests:
// it reads a CredentialProviderRequest on stdin, appends the image asked
// for to the file $CALLS_FILE, and answers with the user name and password
// in $PROVIDER_USERNAME and $PROVIDER_PASSWORD for the auth key
// $PROVIDER_AUTH_KEY (the image's registry by default), with its first
// argument as cacheKeyType and its second, when given, as cacheDuration.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

func main() {
	var req struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Image      string `json:"image"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		fail("request: %v", err)
	}
	if req.APIVersion != "credentialprovider.kubelet.k8s.io/v1" || req.Kind != "CredentialProviderRequest" || req.Image == "" {
		fail("not a CredentialProviderRequest of credentialprovider.kubelet.k8s.io/v1: %+v", req)
	}
	if path := os.Getenv("CALLS_FILE"); path != "" {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			fail("%v", err)
		}
		fmt.Fprintln(f, req.Image)
		f.Close()
	}
	if len(os.Args) < 2 {
		fail("usage: credprovider CACHE_KEY_TYPE [CACHE_DURATION]")
	}
	key := os.Getenv("PROVIDER_AUTH_KEY")
	if key == "" {
		key, _, _ = strings.Cut(req.Image, "/")
	}
	resp := map[string]any{
		"apiVersion":   "credentialprovider.kubelet.k8s.io/v1",
		"kind":         "CredentialProviderResponse",
		"cacheKeyType": os.Args[1],
		"auth": map[string]any{
			key: map[string]string{"username": os.Getenv("PROVIDER_USERNAME"), "password": os.Getenv("PROVIDER_PASSWORD")},
		},
	}
	if len(os.Args) > 2 {
		resp["cacheDuration"] = os.Args[2]
	}
	if err := json.NewEncoder(os.Stdout).Encode(resp); err != nil {
		fail("%v", err)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "credprovider: "+format+"\n", args...)
	os.Exit(1)
}
