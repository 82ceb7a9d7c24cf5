package oci

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"

	"github.com/sirupsen/logrus"
	"go.podman.io/image/v5/signature"
	"go.podman.io/image/v5/types"
	"go.podman.io/storage/pkg/configfile"
)

// PullOption configures Pull and FetchManifest.
type PullOption func(*pullConfig)

type pullConfig struct {
	log            logrus.FieldLogger
	progress       Progress
	tlsVerify      bool
	authFile       string
	policyPath     string
	registriesConf string
	configRoot     string
	enforce        bool
	concurrency    int
	maxLayerSize   int64
	os, arch       string
	variant        string
}

// DefaultConcurrency is how many layers a pull fetches at once unless WithConcurrency
// says otherwise.
const DefaultConcurrency = 3

// ostreeAuthFiles are where bootc (ostree-ext) looks for registry credentials, in its
// order; the first that exists is the only one it reads.
var ostreeAuthFiles = []string{"/etc/ostree/auth.json", "/run/ostree/auth.json", "/usr/lib/ostree/auth.json"}

func newPullConfig(opts []PullOption) *pullConfig {
	discard := logrus.New()
	discard.SetOutput(io.Discard)
	c := &pullConfig{
		log:         discard,
		progress:    NopProgress{},
		tlsVerify:   true,
		concurrency: DefaultConcurrency,
		os:          runtime.GOOS,
		arch:        runtime.GOARCH,
	}
	for _, o := range opts {
		o(c)
	}
	if c.concurrency < 1 {
		c.concurrency = 1
	}
	return c
}

// WithLogger sends debug messages about the pull to l (default: discarded).
func WithLogger(l logrus.FieldLogger) PullOption {
	return func(c *pullConfig) {
		if l != nil {
			c.log = l
		}
	}
}

// WithProgress reports the pull's progress to p (default: nothing).
func WithProgress(p Progress) PullOption {
	return func(c *pullConfig) {
		if p != nil {
			c.progress = p
		}
	}
}

// WithTLSVerify(false) lets registries be reached over plain http, or over https with
// a certificate that does not verify, as podman's --tls-verify=false does. Default true;
// registries.conf can still mark single registries insecure.
func WithTLSVerify(verify bool) PullOption { return func(c *pullConfig) { c.tlsVerify = verify } }

// WithAuthFile reads registry credentials from path only (a containers-auth.json(5)
// file, as podman login --authfile writes). It must exist. Without it the credentials
// come from the first of /etc/ostree/auth.json, /run/ostree/auth.json and
// /usr/lib/ostree/auth.json that exists, as bootc reads them, and when none does, from
// the files podman reads ($REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
// ~/.config/containers/auth.json, ~/.docker/config.json).
func WithAuthFile(path string) PullOption { return func(c *pullConfig) { c.authFile = path } }

// WithPolicyPath reads the signature policy from path (containers-policy.json(5)),
// which must exist. See WithEnforceSigPolicy for the default.
func WithPolicyPath(path string) PullOption { return func(c *pullConfig) { c.policyPath = path } }

// WithRegistriesConf reads registries.conf (mirrors, insecure registries, blocked
// registries) from path and its drop-ins from path + ".d", instead of
// /etc/containers/registries.conf and the other places podman reads.
func WithRegistriesConf(path string) PullOption {
	return func(c *pullConfig) { c.registriesConf = path }
}

// WithConfigRoot reads every system configuration file (/etc/containers/*,
// /etc/ostree/auth.json, /etc/containers/certs.d, ...) from under dir instead of /: for
// a host whose configuration is mounted elsewhere, and for tests. Paths under $HOME and
// those named by environment variables are not moved; explicit paths given by the other
// options are taken as they are.
func WithConfigRoot(dir string) PullOption { return func(c *pullConfig) { c.configRoot = dir } }

// WithEnforceSigPolicy(true) refuses to pull when the signature policy's default is
// insecureAcceptAnything, as bootc's --enforce-container-sigpolicy does (like bootc, it
// looks at the default only, not at transport scopes).
//
// Whatever this says, the policy is always evaluated and what it rejects is not pulled.
// The policy is read from WithPolicyPath, else from the first of
// $CONTAINERS_POLICY_JSON, ~/.config/containers/policy.json,
// /etc/containers/policy.json and /usr/share/containers/policy.json that exists. When
// none exists, the policy is containers-common's default, {"default":
// [{"type":"insecureAcceptAnything"}]}: what podman on the same host would do with its
// packaged policy.json, so a host without containers-common still pulls; with
// enforcement on, that default refuses.
func WithEnforceSigPolicy(enforce bool) PullOption {
	return func(c *pullConfig) { c.enforce = enforce }
}

// WithConcurrency fetches at most n layers at once (default DefaultConcurrency).
func WithConcurrency(n int) PullOption { return func(c *pullConfig) { c.concurrency = n } }

// WithMaxLayerSize bounds each layer's uncompressed size (IngestLayer's WithMaxSize;
// default DefaultMaxLayerSize).
func WithMaxLayerSize(n int64) PullOption { return func(c *pullConfig) { c.maxLayerSize = n } }

// WithPlatform picks the image for os/arch/variant out of a manifest list or OCI index
// (default: this host's runtime.GOOS and runtime.GOARCH, with the variant detected).
// Empty values keep the defaults.
func WithPlatform(goos, arch, variant string) PullOption {
	return func(c *pullConfig) {
		if goos != "" {
			c.os = goos
		}
		if arch != "" {
			c.arch = arch
		}
		c.variant = variant
	}
}

// systemContext builds the containers/image configuration of a pull.
func (c *pullConfig) systemContext() (*types.SystemContext, error) {
	sys := &types.SystemContext{
		RootForImplicitAbsolutePaths: c.configRoot,
		OSChoice:                     c.os,
		ArchitectureChoice:           c.arch,
		VariantChoice:                c.variant,
		DockerRegistryUserAgent:      "ociboot",
	}
	if c.registriesConf != "" {
		sys.SystemRegistriesConfPath = c.registriesConf
		sys.SystemRegistriesConfDirPath = c.registriesConf + ".d"
	}
	if c.policyPath != "" {
		sys.SignaturePolicyPath = c.policyPath
	}
	if !c.tlsVerify {
		sys.DockerInsecureSkipTLSVerify = types.OptionalBoolTrue
	}
	auth, err := c.authFilePath()
	if err != nil {
		return nil, err
	}
	sys.AuthFilePath = auth
	return sys, nil
}

// authFilePath is the credentials file to use, "" meaning containers/image's defaults.
func (c *pullConfig) authFilePath() (string, error) {
	if c.authFile != "" {
		if _, err := os.Stat(c.authFile); err != nil {
			return "", fmt.Errorf("auth file: %w", err)
		}
		return c.authFile, nil
	}
	for _, p := range ostreeAuthFiles {
		p = filepath.Join(c.configRoot, p)
		if _, err := os.Stat(p); err == nil {
			c.log.Debugf("reading registry credentials from %s", p)
			return p, nil
		}
	}
	return "", nil
}

// policyContext reads the signature policy, applies enforcement, and returns the
// context that evaluates it. The caller destroys it.
func (c *pullConfig) policyContext(sys *types.SystemContext) (*signature.PolicyContext, error) {
	policy, err := signature.DefaultPolicy(sys)
	source := "policy.json"
	switch {
	case err == nil && c.policyPath != "":
		source = c.policyPath
	case err != nil && c.policyPath == "" && errors.Is(err, configfile.ErrConfigFileNotFound):
		c.log.Debugf("no policy.json found; using containers-common's default, insecureAcceptAnything")
		policy = &signature.Policy{Default: signature.PolicyRequirements{signature.NewPRInsecureAcceptAnything()}}
		source = "the built-in default policy (no policy.json found)"
	case err != nil:
		return nil, fmt.Errorf("reading the signature policy: %w", err)
	}
	if c.enforce && defaultIsInsecure(policy) {
		return nil, &userError{kind: ErrPolicyRejected, msg: fmt.Sprintf(
			"signature enforcement refuses %s: its default is insecureAcceptAnything; set a default that requires signatures", source)}
	}
	pc, err := signature.NewPolicyContext(policy)
	if err != nil {
		return nil, fmt.Errorf("signature policy from %s: %w", source, err)
	}
	return pc, nil
}

// defaultIsInsecure is bootc's test: a default made of exactly one insecureAcceptAnything.
// The requirement types are private to containers/image; their JSON form is public.
func defaultIsInsecure(p *signature.Policy) bool {
	if len(p.Default) != 1 {
		return false
	}
	b, err := json.Marshal(p.Default[0])
	if err != nil {
		return false
	}
	var req struct {
		Type string `json:"type"`
	}
	return json.Unmarshal(b, &req) == nil && req.Type == "insecureAcceptAnything"
}
