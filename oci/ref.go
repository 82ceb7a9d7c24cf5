package oci

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"strings"
	"syscall"

	"github.com/docker/distribution/registry/api/errcode"
	"github.com/ociboot/ociboot/composefs"

	"go.podman.io/image/v5/directory"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/docker/reference"
	ociarchive "go.podman.io/image/v5/oci/archive"
	"go.podman.io/image/v5/oci/layout"
	"go.podman.io/image/v5/storage"
	"go.podman.io/image/v5/types"
)

// Transports, named as bootc's --transport names them and as an Image records them.
const (
	TransportRegistry          = "registry"           // a container registry (containers/image "docker://")
	TransportOCI               = "oci"                // an OCI image layout directory: DIR[:TAG]
	TransportOCIArchive        = "oci-archive"        // a tar of an OCI image layout: FILE[:TAG]
	TransportContainersStorage = "containers-storage" // podman's local image store: [STORE]NAME[:TAG]
	TransportDir               = "dir"                // containers/image's dir: format: DIR
)

// transportSpec ties a bootc transport name to its containers/image prefix and parser.
type transportSpec struct {
	name   string // bootc's name
	prefix string // the containers/image prefix of a full reference string
	want   string // what a reference looks like, for errors
	parse  func(string) (types.ImageReference, error)
}

var transportSpecs = []transportSpec{
	{TransportRegistry, "docker://", "[REGISTRY/]NAME[:TAG|@DIGEST]", func(s string) (types.ImageReference, error) {
		return docker.ParseReference("//" + s)
	}},
	{TransportOCI, "oci:", "DIR[:TAG]", layout.ParseReference},
	{TransportOCIArchive, "oci-archive:", "FILE[:TAG]", ociarchive.ParseReference},
	{TransportContainersStorage, "containers-storage:", "[STORE]NAME[:TAG]", storage.Transport.ParseReference},
	{TransportDir, "dir:", "DIR", directory.Transport.ParseReference},
}

func specByName(name string) *transportSpec {
	for i := range transportSpecs {
		if transportSpecs[i].name == name {
			return &transportSpecs[i]
		}
	}
	return nil
}

// specByPrefix finds the transport whose containers/image prefix s starts with. A plain
// registry reference never matches: "localhost:5000/os" is not a transport "localhost".
func specByPrefix(s string) *transportSpec {
	for i := range transportSpecs {
		if strings.HasPrefix(s, transportSpecs[i].prefix) {
			return &transportSpecs[i]
		}
	}
	return nil
}

// ParseImageRef parses an image reference the way bootc's switch takes it: s with
// transport being a --transport value ("registry", the default when empty, "oci",
// "oci-archive", "containers-storage" or "dir"). A registry reference is a plain
// "registry/name:tag" (short names resolve to docker.io as podman's would without
// registries.conf aliases). s may also carry its containers/image transport prefix
// ("docker://quay.io/os:1", "oci:/srv/os:stable", "oci-archive:os.tar", "dir:/srv/os",
// "containers-storage:localhost/os"); a prefix naming another transport than an explicit
// non-registry transport is an error.
//
// Parsing a containers-storage reference opens the local containers-storage store, as
// podman does; the other transports touch nothing.
func ParseImageRef(s, transport string) (types.ImageReference, error) {
	if transport == "" {
		transport = TransportRegistry
	}
	spec := specByName(transport)
	if spec == nil {
		return nil, fmt.Errorf("image %q: unknown transport %q: want one of registry, oci, oci-archive, containers-storage, dir", s, transport)
	}
	within := s
	if p := specByPrefix(s); p != nil {
		if transport != TransportRegistry && p != spec {
			return nil, fmt.Errorf("image %q names transport %s, but the transport is %s", s, p.name, transport)
		}
		spec, within = p, strings.TrimPrefix(s, p.prefix)
	} else if scheme, _, ok := strings.Cut(s, "://"); ok && !strings.ContainsAny(scheme, "/.:") {
		return nil, fmt.Errorf("image %q: unknown transport %q: want a registry reference or docker://, oci:, oci-archive:, containers-storage:, dir:", s, scheme)
	}
	if within == "" {
		return nil, fmt.Errorf("image %q: empty %s reference: want %s", s, spec.name, spec.want)
	}
	ref, err := spec.parse(within)
	if err != nil {
		return nil, fmt.Errorf("image %q: not a valid %s reference (want %s): %w", s, spec.name, spec.want, err)
	}
	return ref, nil
}

// RefString splits ref into bootc's transport name and image string, as bootc status
// shows them: ("registry", "quay.io/example/os:stable"), ("oci", "/srv/os:stable"). A
// registry image is fully qualified ("busybox" is "docker.io/library/busybox:latest"),
// so the same image is named the same way whoever typed it.
func RefString(ref types.ImageReference) (transport, image string) {
	name := ref.Transport().Name()
	switch name {
	case docker.Transport.Name():
		if named := ref.DockerReference(); named != nil {
			return TransportRegistry, named.String()
		}
		return TransportRegistry, strings.TrimPrefix(ref.StringWithinTransport(), "//")
	case layout.Transport.Name(), ociarchive.Transport.Name():
		// An OCI reference without a tag prints as "DIR:"; the colon says nothing.
		return name, strings.TrimSuffix(ref.StringWithinTransport(), ":")
	}
	return name, ref.StringWithinTransport()
}

// Errors callers branch on. The errors of Pull and FetchManifest wrap them where they
// are the cause; their messages are for users, one line that says what to do.
var (
	// ErrDigestMismatch: a blob, config or layer does not have the digest it is named
	// by (composefs.ErrDigestMismatch itself, so one errors.Is covers both).
	ErrDigestMismatch = composefs.ErrDigestMismatch
	// ErrPolicyRejected: the signature policy rejects the image, or enforcement
	// (WithEnforceSigPolicy) rejects the policy.
	ErrPolicyRejected = errors.New("rejected by the signature policy")
	// ErrAuthRequired: the registry wants credentials it was not given, or refuses
	// those it was.
	ErrAuthRequired = errors.New("authentication required")
	// ErrManifestUnknown: the source has no image of that name and tag.
	ErrManifestUnknown = errors.New("manifest unknown")
	// ErrBlobUnknown: the manifest names a blob the source lacks.
	ErrBlobUnknown = errors.New("blob unknown")
	// ErrUnreachable: the registry cannot be reached, or not over https.
	ErrUnreachable = errors.New("registry unreachable")
)

// userError is an error as a user should read it: msg alone is its text; it unwraps to
// its kind (a sentinel of this package) and to the cause, if any, for errors.Is and
// errors.As.
type userError struct {
	kind  error
	msg   string
	cause error
}

func (e *userError) Error() string { return e.msg }

func (e *userError) Unwrap() []error {
	var errs []error
	for _, err := range []error{e.kind, e.cause} {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// oneLine keeps a cause's text on one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}

// where names the place the image comes from: the registry, or the local path.
func (p *puller) where() string {
	if named := p.ref.DockerReference(); named != nil && p.transport == TransportRegistry {
		return reference.Domain(named)
	}
	return p.transport + ":" + p.ref.StringWithinTransport()
}

// explain turns an error of containers/image or of the store into a userError: one
// line, naming the image, and saying what to do when the cause is one a user can act
// on. what says what was being read: "manifest", "blob DIGEST", or "" when unknown. A
// userError passes unchanged, so errors are explained once, where best known.
func (p *puller) explain(ctx context.Context, err error, what string) error {
	var ue *userError
	switch {
	case err == nil || errors.As(err, &ue):
		return err
	case ctx.Err() != nil:
		return &userError{cause: ctx.Err(), msg: fmt.Sprintf("pulling %s: %v", p.name, ctx.Err())}
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return &userError{cause: err, msg: fmt.Sprintf(
			"no space left on device writing the store at %s: free space or run ociboot gc (nothing was recorded)", p.repo.dir)}
	}
	cause := oneLine(err.Error())
	var unauth docker.ErrUnauthorizedForCredentials
	code := ""
	var coder errcode.ErrorCoder
	if errors.As(err, &coder) {
		code = coder.ErrorCode().String()
	}
	status := 0
	var httpErr docker.UnexpectedHTTPStatusError
	if errors.As(err, &httpErr) {
		status = httpErr.StatusCode
	} else if strings.Contains(cause, "StatusCode: 404") {
		status = 404
	}
	local := p.transport != TransportRegistry
	var notInLayout layout.ImageNotFoundError
	switch {
	case errors.As(err, &unauth), code == "UNAUTHORIZED", code == "DENIED", status == 401, status == 403:
		return &userError{kind: ErrAuthRequired, cause: err, msg: fmt.Sprintf(
			"authentication required for %s (%s): log in with podman login, or put credentials in /etc/ostree/auth.json", p.name, cause)}
	case code == "MANIFEST_UNKNOWN", code == "NAME_UNKNOWN", errors.As(err, &notInLayout),
		what == "manifest" && (status == 404 || local && errors.Is(err, fs.ErrNotExist)):
		if local {
			return &userError{kind: ErrManifestUnknown, cause: err, msg: fmt.Sprintf(
				"no image %s:%s: check the path and the tag", p.transport, p.name)}
		}
		return &userError{kind: ErrManifestUnknown, cause: err, msg: fmt.Sprintf(
			"no image %s in %s: check the name and the tag", p.imagePath(), p.where())}
	case strings.HasPrefix(what, "blob ") && (code == "BLOB_UNKNOWN" || status == 404 || local && errors.Is(err, fs.ErrNotExist)):
		return &userError{kind: ErrBlobUnknown, cause: err, msg: fmt.Sprintf(
			"%s of %s is missing from %s: the image was pushed incompletely or its blobs deleted; push it again",
			what, p.name, p.where())}
	case !local && unreachable(err):
		return &userError{kind: ErrUnreachable, cause: err, msg: fmt.Sprintf(
			"cannot reach %s for %s (%s): is the registry reachable? for a plain-http registry use --tls-verify=false",
			p.where(), p.name, cause)}
	}
	return &userError{cause: err, msg: fmt.Sprintf("pulling %s: %s", p.name, cause)}
}

// imagePath is the image's name within its registry ("os/myos:stable"), else its name.
func (p *puller) imagePath() string {
	if named := p.ref.DockerReference(); named != nil && p.transport == TransportRegistry {
		return strings.TrimPrefix(named.String(), reference.Domain(named)+"/")
	}
	return p.name
}

// unreachable reports whether err is about the network or TLS, not about the image.
func unreachable(err error) bool {
	var opErr *net.OpError
	var dnsErr *net.DNSError
	var certErr *tls.CertificateVerificationError
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var recErr tls.RecordHeaderError
	return errors.As(err, &opErr) || errors.As(err, &dnsErr) || errors.As(err, &certErr) ||
		errors.As(err, &unknownAuth) || errors.As(err, &hostErr) || errors.As(err, &recErr) ||
		errors.Is(err, syscall.ECONNREFUSED) || strings.Contains(err.Error(), "server gave HTTP response to HTTPS client")
}
