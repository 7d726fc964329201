// Command vcsim serves govmomi's vCenter simulator for Tandem's tests (Debian's govmomi
// package ships the simulator library but no command). It builds the VPX model, listens on
// -listen with TLS (a self-signed certificate) and the given credentials, prints
// "vcsim ready <url>" once it serves, and runs until killed (SIGTERM/SIGINT).
//
// The certificate is a fresh self-signed one (-cert-out writes it as PEM, to trust it).
//
// Test extras, all off by default:
//
//	-tools-running VM,...  these VMs report VMware Tools running and implement RebootGuest
//	                       (the simulator itself reports tools not running and lacks it);
//	-vary-load             distinct, seeded host quickStats and datastore free space, so
//	                       that "the host/datastore with the most free ..." is not a tie;
//	-delay Method=ms,...   hold these SOAP methods for ms milliseconds before serving them.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"math/big"
	"math/rand"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// toolsVM is a VM whose guest runs VMware Tools: it answers RebootGuest. It embeds the
// simulator's VM by value: the property collector digs the mo type out of the first field.
type toolsVM struct{ simulator.VirtualMachine }

func (vm *toolsVM) RebootGuest(ctx *simulator.Context, req *types.RebootGuest) soap.HasFault {
	body := new(methods.RebootGuestBody)
	if state := vm.Runtime.PowerState; state != types.VirtualMachinePowerStatePoweredOn {
		body.Fault_ = simulator.Fault("", &types.InvalidPowerState{
			RequestedState: types.VirtualMachinePowerStatePoweredOn, ExistingState: state})
		return body
	}
	now := time.Now()
	simulator.Map.Update(vm, []types.PropertyChange{{Name: "summary.runtime.bootTime", Val: &now}})
	body.Res = new(types.RebootGuestResponse)
	return body
}

// selfSigned makes a fresh ECDSA certificate for 127.0.0.1 and localhost (the simulator's
// built-in one has a 1024-bit RSA key, which OpenSSL refuses as too weak to verify).
func selfSigned() (tls.Certificate, []byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	tmpl := x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "vcsim"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(crand.Reader, &tmpl, &tmpl, &key.PublicKey, key)
	if err != nil {
		log.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	user := flag.String("username", "user", "login user name")
	pass := flag.String("password", "pass", "login password")
	model := simulator.VPX()
	flag.IntVar(&model.Datacenter, "dc", model.Datacenter, "datacenters")
	flag.IntVar(&model.Cluster, "cluster", model.Cluster, "clusters per datacenter")
	flag.IntVar(&model.ClusterHost, "host", model.ClusterHost, "hosts per cluster")
	flag.IntVar(&model.Host, "standalone-host", model.Host, "standalone hosts per datacenter")
	flag.IntVar(&model.Machine, "vm", model.Machine, "VMs per resource pool")
	flag.IntVar(&model.Datastore, "ds", model.Datastore, "datastores")
	tools := flag.String("tools-running", "", "comma-separated VM names whose Tools run")
	vary := flag.Bool("vary-load", false, "distinct host load and datastore free space")
	seed := flag.Int64("seed", 1, "seed of -vary-load")
	delays := flag.String("delay", "", "comma-separated Method=milliseconds")
	certOut := flag.String("cert-out", "", "write the server's certificate (PEM) here")
	flag.Parse()

	model.DelayConfig.MethodDelay = map[string]int{}
	for _, d := range strings.FieldsFunc(*delays, func(r rune) bool { return r == ',' }) {
		name, ms, _ := strings.Cut(d, "=")
		n, err := strconv.Atoi(ms)
		if err != nil {
			log.Fatalf("-delay %q: want Method=milliseconds", d)
		}
		model.DelayConfig.MethodDelay[name] = n
	}
	if err := model.Create(); err != nil {
		log.Fatal(err)
	}
	defer model.Remove()

	for _, name := range strings.FieldsFunc(*tools, func(r rune) bool { return r == ',' }) {
		var vm *simulator.VirtualMachine
		for _, e := range simulator.Map.All("VirtualMachine") {
			if v, ok := e.(*simulator.VirtualMachine); ok && v.Name == name {
				vm = v
			}
		}
		if vm == nil {
			log.Fatalf("-tools-running: no VM named %q", name)
		}
		vm.Guest.ToolsRunningStatus = string(types.VirtualMachineToolsRunningStatusGuestToolsRunning)
		vm.Guest.ToolsStatus = types.VirtualMachineToolsStatusToolsOk
		vm.Summary.Guest.ToolsRunningStatus = vm.Guest.ToolsRunningStatus
		vm.Summary.Guest.ToolsStatus = vm.Guest.ToolsStatus
		simulator.Map.Put(&toolsVM{*vm})
	}
	if *vary {
		rnd := rand.New(rand.NewSource(*seed))
		for _, e := range simulator.Map.All("HostSystem") {
			h := e.(*simulator.HostSystem)
			hw := h.Summary.Hardware
			h.Summary.QuickStats.OverallCpuUsage = rnd.Int31n(hw.CpuMhz * int32(hw.NumCpuCores))
			h.Summary.QuickStats.OverallMemoryUsage = rnd.Int31n(int32(hw.MemorySize >> 20))
		}
		for _, e := range simulator.Map.All("Datastore") {
			ds := e.(*simulator.Datastore)
			ds.Summary.Capacity = 1 << 40
			ds.Summary.FreeSpace = (1 << 30) * (100 + rnd.Int63n(800))
			ds.Info.GetDatastoreInfo().FreeSpace = ds.Summary.FreeSpace
		}
	}

	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*user, *pass)}
	cert, certPEM := selfSigned()
	if *certOut != "" {
		if err := os.WriteFile(*certOut, certPEM, 0o644); err != nil {
			log.Fatal(err)
		}
	}
	model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	server := model.Service.NewServer()
	defer server.Close()

	u := *server.URL
	u.User = nil
	fmt.Printf("vcsim ready %s\n", u.String())
	os.Stdout.Sync()

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
