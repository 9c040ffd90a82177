// Command etcd is the etcd server, as the root package of go.etcd.io/etcd
// builds it upstream (etcd's own main.go calls etcdmain.Main the same way).
// The server's published module has no main package of its own, so this
// component carries the two lines upstream's root module does.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
