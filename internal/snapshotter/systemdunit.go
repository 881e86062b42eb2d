package snapshotter

import (
	"bytes"
	"os"
	"text/template"
)

var unitTemplate = template.Must(template.New("unit").Parse(`# Written by sluice-snapshotter install.
[Unit]
Description=Sluice snapshotter: lazy pulling of streamed images for containerd
Documentation=https://github.com/sluicehq/sluice
Before=containerd.service
After=network-online.target local-fs.target

[Service]
Type=simple
ExecStartPre=-/sbin/modprobe fuse
ExecStart={{.Binary}} --root {{.Root}} --address {{.Address}}{{if .ConfigFile}} --config {{.ConfigFile}}{{end}}
Restart=always
RestartSec=1
# Only the snapshotter restarts: the FUSE manager it started keeps running
# containers' layers mounted.
KillMode=process

[Install]
WantedBy=multi-user.target
`))

// InstallSystemdUnit writes the unit file; it reports whether it changed.
func InstallSystemdUnit(o InstallOptions) (bool, error) {
	var b bytes.Buffer
	if err := unitTemplate.Execute(&b, o); err != nil {
		return false, err
	}
	if old, err := os.ReadFile(o.SystemdUnit); err == nil && bytes.Equal(old, b.Bytes()) {
		return false, nil
	}
	return true, writeFile(o.SystemdUnit, b.Bytes(), 0o644)
}
