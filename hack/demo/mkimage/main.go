// Command mkimage is the demo's image builder: it makes a bootable OCI image of
// directories, one layer each (bottom first), and pushes it to a registry over plain
// HTTP, with nothing but the standard library:
//
//	mkimage -version 2 127.0.0.1:5000/demo/os:stable base/ v2/
//
// Every entry is root-owned with a fixed mtime, so the same directory always makes the
// same layer: two images built on the same base directory share that layer, as images
// built FROM one base do. The image is labelled containers.bootc=1, with -version as
// org.opencontainers.image.version. It prints the digests of the manifest, the config
// and each layer.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// mtime is every entry's modification time: 2024-01-01T00:00:00Z.
var mtime = time.Unix(1704067200, 0).UTC()

type descriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

type blob struct {
	descriptor
	data []byte
}

func main() {
	version := flag.String("version", "", "the image's version label")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: mkimage [-version V] HOST:PORT/REPO:TAG DIR...\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() < 2 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*version, flag.Arg(0), flag.Args()[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(version, ref string, dirs []string) error {
	host, path, ok := strings.Cut(ref, "/")
	i := strings.LastIndex(path, ":")
	if !ok || i < 0 {
		return fmt.Errorf("%q: want HOST:PORT/REPO:TAG", ref)
	}
	repo, tag := path[:i], path[i+1:]
	var layers []blob
	var diffIDs []string
	for _, dir := range dirs {
		raw, err := tarDir(dir)
		if err != nil {
			return err
		}
		diffIDs = append(diffIDs, digestOf(raw))
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		if _, err := zw.Write(raw); err != nil {
			return err
		}
		if err := zw.Close(); err != nil {
			return err
		}
		layers = append(layers, newBlob("application/vnd.oci.image.layer.v1.tar+gzip", gz.Bytes()))
	}
	labels := map[string]string{"containers.bootc": "1"}
	if version != "" {
		labels["org.opencontainers.image.version"] = version
	}
	var history []map[string]string
	for _, dir := range dirs {
		history = append(history, map[string]string{"created": mtime.Format(time.RFC3339), "created_by": "mkimage " + dir})
	}
	cfgJSON, err := json.Marshal(map[string]any{
		"created": mtime.Format(time.RFC3339), "architecture": runtime.GOARCH, "os": "linux",
		"config":  map[string]any{"Labels": labels},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": diffIDs},
		"history": history,
	})
	if err != nil {
		return err
	}
	config := newBlob("application/vnd.oci.image.config.v1+json", cfgJSON)
	var layerDescs []descriptor
	for _, l := range layers {
		layerDescs = append(layerDescs, l.descriptor)
	}
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": config.descriptor, "layers": layerDescs,
	})
	if err != nil {
		return err
	}
	base := "http://" + host + "/v2/" + repo
	for _, b := range append([]blob{config}, layers...) {
		if err := pushBlob(base, b); err != nil {
			return err
		}
	}
	if err := put(base+"/manifests/"+tag, "application/vnd.oci.image.manifest.v1+json", manifest); err != nil {
		return fmt.Errorf("pushing the manifest: %w", err)
	}
	fmt.Printf("manifest %s\nconfig %s\n", digestOf(manifest), config.Digest)
	for i, l := range layers {
		fmt.Printf("layer %s %s (%d bytes)\n", dirs[i], l.Digest, l.Size)
	}
	return nil
}

func newBlob(mediaType string, data []byte) blob {
	return blob{descriptor{mediaType, digestOf(data), int64(len(data))}, data}
}

func digestOf(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// tarDir writes the tree under dir as a layer: paths relative to dir, in lexical order,
// root-owned, with the fixed mtime.
func tarDir(dir string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if d.Type()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		hdr.Name = filepath.ToSlash(rel)
		if d.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		hdr.ModTime, hdr.AccessTime, hdr.ChangeTime = mtime, time.Time{}, time.Time{}
		hdr.Format = tar.FormatPAX
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("making a layer of %s: %w", dir, err)
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// pushBlob uploads a blob in one request (POST, then PUT with the digest).
func pushBlob(base string, b blob) error {
	resp, err := http.Post(base+"/blobs/uploads/", "", nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("starting the upload of %s: %s", b.Digest, resp.Status)
	}
	loc, err := resp.Location()
	if err != nil {
		return fmt.Errorf("starting the upload of %s: %w", b.Digest, err)
	}
	q := loc.Query()
	q.Set("digest", b.Digest)
	loc.RawQuery = q.Encode()
	if err := put(loc.String(), "application/octet-stream", b.data); err != nil {
		return fmt.Errorf("uploading %s: %w", b.Digest, err)
	}
	return nil
}

func put(u, contentType string, body []byte) error {
	req, err := http.NewRequest(http.MethodPut, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return errors.New(resp.Status + ": " + strings.TrimSpace(string(msg)))
	}
	return nil
}
