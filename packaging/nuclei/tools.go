//go:build tools

package tools

import _ "github.com/projectdiscovery/nuclei/v3/cmd/nuclei"
