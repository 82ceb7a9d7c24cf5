package deploy

import (
	"strings"
	"testing"
	"time"
)

// The container-image-reference line is bootc's composefs origin form
// (ostree-unverified-image: then the containers/image transport prefix).
func TestOriginRoundTrip(t *testing.T) {
	for _, o := range []Origin{
		{Transport: "registry", Image: "quay.io/os/myos:stable", ManifestDigest: "sha256:" + strings.Repeat("a", 64), BootDigest: strings.Repeat("b", 64), Deployed: time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)},
		{Transport: "oci", Image: "/srv/layout:v2", Pinned: true, Deployed: time.Unix(0, 0).UTC()},
		{Transport: "containers-storage", Image: "localhost/myos:latest", Deployed: time.Unix(1700000000, 0).UTC()},
	} {
		data := o.Bytes()
		if o.Transport == "registry" && !strings.Contains(string(data), "container-image-reference=ostree-unverified-image:docker://quay.io/os/myos:stable\n") {
			t.Errorf("registry origin:\n%s", data)
		}
		got, err := ParseOrigin(data)
		if err != nil {
			t.Fatalf("%s: %v", data, err)
		}
		if *got != o {
			t.Errorf("round trip of\n%s\ngave %+v, want %+v", data, *got, o)
		}
	}
	for _, bad := range []string{"[origin]\ncontainer-image-reference=ostree-unverified-image:ftp://x\n", "[ociboot]\npinned=maybe\n", "[image]\nnot a line\n"} {
		if _, err := ParseOrigin([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
