package deploy

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Origin is what a deployment was made from, kept in state/deploy/<id>/origin in the
// INI form bootc's composefs backend writes, so tools that read bootc's origin files
// read ours:
//
//	[origin]
//	container-image-reference=ostree-unverified-image:docker://quay.io/os/myos:stable
//	[image]
//	manifest_digest=sha256:...
//	[boot]
//	boot_type=bls
//	digest=<sha256 of kernel and initramfs>
//	[ociboot]
//	deployed=2026-11-26T10:00:00Z
//	pinned=false
type Origin struct {
	Transport      string // bootc's transport name: registry, oci, ...
	Image          string // the reference within the transport
	ManifestDigest string
	BootDigest     string
	Deployed       time.Time
	Pinned         bool
}

// containers/image prefixes of bootc's transport names, for container-image-reference.
var transportPrefixes = map[string]string{
	"registry":           "docker://",
	"oci":                "oci:",
	"oci-archive":        "oci-archive:",
	"containers-storage": "containers-storage:",
	"dir":                "dir:",
}

const unverifiedPrefix = "ostree-unverified-image:"

// Bytes is the origin file's content.
func (o *Origin) Bytes() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "[origin]\ncontainer-image-reference=%s%s%s\n", unverifiedPrefix, transportPrefixes[o.Transport], o.Image)
	fmt.Fprintf(&b, "[image]\nmanifest_digest=%s\n", o.ManifestDigest)
	fmt.Fprintf(&b, "[boot]\nboot_type=bls\ndigest=%s\n", o.BootDigest)
	fmt.Fprintf(&b, "[ociboot]\ndeployed=%s\npinned=%t\n", o.Deployed.UTC().Format(time.RFC3339), o.Pinned)
	return b.Bytes()
}

// ParseOrigin reads an origin file.
func ParseOrigin(data []byte) (*Origin, error) {
	o := &Origin{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = line[1 : len(line)-1]
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("origin line %d: %q is not key=value", n, line)
		}
		switch section + "." + key {
		case "origin.container-image-reference":
			ref, _ := strings.CutPrefix(value, unverifiedPrefix)
			for t, p := range transportPrefixes {
				if rest, ok := strings.CutPrefix(ref, p); ok {
					o.Transport, o.Image = t, rest
				}
			}
			if o.Transport == "" {
				return nil, fmt.Errorf("origin line %d: unknown transport in %q", n, value)
			}
		case "image.manifest_digest":
			o.ManifestDigest = value
		case "boot.digest":
			o.BootDigest = value
		case "ociboot.deployed":
			t, err := time.Parse(time.RFC3339, value)
			if err != nil {
				return nil, fmt.Errorf("origin line %d: %w", n, err)
			}
			o.Deployed = t
		case "ociboot.pinned":
			p, err := strconv.ParseBool(value)
			if err != nil {
				return nil, fmt.Errorf("origin line %d: %w", n, err)
			}
			o.Pinned = p
		}
	}
	return o, sc.Err()
}
