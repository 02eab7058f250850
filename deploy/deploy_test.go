// Package deploy holds no code: its tests check the deployment files in
// this directory (Kubernetes manifests, the systemd unit, the Containerfile,
// the compose file and the Prometheus configurations).
package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/gotrack/gotrack/internal/config"
)

// knownSettings returns GoTrack's settings, read from the README's table,
// which a test in internal/config keeps equal to the settings list.
func knownSettings(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([A-Z][A-Z0-9_]+)` \\|").FindAllSubmatch(b, -1) {
		known[string(m[1])] = true
	}
	if len(known) < 30 {
		t.Fatalf("found only %d settings in README.md's table", len(known))
	}
	return known
}

// runtimeEnv are environment variables of the Go runtime, not GoTrack's.
var runtimeEnv = map[string]bool{"GOMEMLIMIT": true, "GOMAXPROCS": true, "GODEBUG": true}

func checkEnvNames(t *testing.T, where string, names []string) {
	t.Helper()
	known := knownSettings(t)
	for _, n := range names {
		if !known[n] && !runtimeEnv[n] {
			t.Errorf("%s sets %s, which is not a GoTrack setting", where, n)
		}
	}
}

// checkEnvValues loads GoTrack's configuration from env, as GoTrack would
// at start, and reports every problem but files that do not exist on this
// machine (certificates, token files: they exist where the file deploys).
func checkEnvValues(t *testing.T, where string, env map[string]string) {
	t.Helper()
	// TRUST_PROXY with no TRUSTED_PROXIES trusts X-Forwarded-For from any
	// peer: every client that reaches GoTrack directly picks its address.
	if strings.EqualFold(env["TRUST_PROXY"], "true") && env["TRUSTED_PROXIES"] == "" {
		t.Errorf("%s: TRUST_PROXY=true without TRUSTED_PROXIES lets any client choose its recorded IP", where)
	}
	_, err := config.Load(func(k string) string { return env[k] })
	if err == nil {
		return
	}
	for line := range strings.Lines(err.Error()) {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "- ") && !strings.Contains(line, "no such file or directory") {
			t.Errorf("%s: GoTrack would refuse this configuration: %s", where, strings.TrimPrefix(line, "- "))
		}
	}
}

// duration parses a Go duration, failing the test when it cannot.
func duration(t *testing.T, where, v string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	return d
}

// certificate is the part of cert-manager's Certificate (cert-manager.io/v1)
// these manifests use. cert-manager's Go module pulls in much of
// Kubernetes' controller machinery, so the manifest is decoded strictly
// into this local copy of its fields instead (names as in cert-manager's
// API reference).
type certificate struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	ObjectMeta struct {
		Name      string            `json:"name"`
		Namespace string            `json:"namespace"`
		Labels    map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		SecretName  string   `json:"secretName"`
		Duration    string   `json:"duration"`
		RenewBefore string   `json:"renewBefore"`
		CommonName  string   `json:"commonName"`
		DNSNames    []string `json:"dnsNames"`
		Usages      []string `json:"usages"`
		PrivateKey  struct {
			Algorithm      string `json:"algorithm"`
			Size           int    `json:"size"`
			RotationPolicy string `json:"rotationPolicy"`
		} `json:"privateKey"`
		IssuerRef struct {
			Name  string `json:"name"`
			Kind  string `json:"kind"`
			Group string `json:"group"`
		} `json:"issuerRef"`
	} `json:"spec"`
}

// kustomization is the part of kustomize's Kustomization the directory
// uses (kustomize's Go types are not worth a module for three fields).
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
}

// manifests is every object of deploy/kubernetes, decoded.
type manifests struct {
	files           []string
	kustomizations  []*kustomization
	namespaces      []*corev1.Namespace
	serviceAccounts []*corev1.ServiceAccount
	statefulSets    []*appsv1.StatefulSet
	services        []*corev1.Service
	serviceMonitors []*monitoringv1.ServiceMonitor
	networkPolicies []*networkingv1.NetworkPolicy
	pdbs            []*policyv1.PodDisruptionBudget
	certificates    []*certificate
}

// decodeManifests decodes every document of every YAML file in dir
// strictly (an unknown or misspelt field fails) into the API type its
// apiVersion and kind name.
func decodeManifests(t *testing.T, dir string) *manifests {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", dir, err)
	}
	m := &manifests{}
	for _, f := range files {
		m.files = append(m.files, filepath.Base(f))
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
			where := fmt.Sprintf("%s, document %d", filepath.Base(f), i+1)
			var head struct{ APIVersion, Kind string }
			if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			if head.Kind == "" {
				continue // comments only
			}
			var obj any
			switch head.APIVersion + " " + head.Kind {
			case "kustomize.config.k8s.io/v1beta1 Kustomization":
				o := &kustomization{}
				m.kustomizations, obj = append(m.kustomizations, o), o
			case "v1 Namespace":
				o := &corev1.Namespace{}
				m.namespaces, obj = append(m.namespaces, o), o
			case "v1 ServiceAccount":
				o := &corev1.ServiceAccount{}
				m.serviceAccounts, obj = append(m.serviceAccounts, o), o
			case "apps/v1 StatefulSet":
				o := &appsv1.StatefulSet{}
				m.statefulSets, obj = append(m.statefulSets, o), o
			case "v1 Service":
				o := &corev1.Service{}
				m.services, obj = append(m.services, o), o
			case "monitoring.coreos.com/v1 ServiceMonitor":
				o := &monitoringv1.ServiceMonitor{}
				m.serviceMonitors, obj = append(m.serviceMonitors, o), o
			case "networking.k8s.io/v1 NetworkPolicy":
				o := &networkingv1.NetworkPolicy{}
				m.networkPolicies, obj = append(m.networkPolicies, o), o
			case "policy/v1 PodDisruptionBudget":
				o := &policyv1.PodDisruptionBudget{}
				m.pdbs, obj = append(m.pdbs, o), o
			case "cert-manager.io/v1 Certificate":
				o := &certificate{}
				m.certificates, obj = append(m.certificates, o), o
			default:
				t.Errorf("%s: no type for apiVersion %q kind %q", where, head.APIVersion, head.Kind)
				continue
			}
			if err := decodeStrict([]byte(doc), obj); err != nil {
				t.Errorf("%s (%s): %v", where, head.Kind, err)
			}
		}
	}
	return m
}

// decodeStrict decodes one YAML document as the API server does: field
// names are case-sensitive, and unknown or duplicate fields are errors.
// (encoding/json, and so yaml.UnmarshalStrict, matches names regardless of
// case: readOnlyRootFileSystem would pass.)
func decodeStrict(doc []byte, v any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strict, err := sigsjson.UnmarshalStrict(j, v)
	return errors.Join(append(strict, err)...)
}

func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// TestKubernetesManifests decodes every manifest strictly into the
// Kubernetes and prometheus-operator API types, then checks that the
// objects fit together and keep the promises of METRICS.md and the README.
func TestKubernetesManifests(t *testing.T) {
	m := decodeManifests(t, "kubernetes")
	if t.Failed() {
		return
	}
	if len(m.statefulSets) != 1 || len(m.serviceMonitors) != 1 || len(m.networkPolicies) != 1 ||
		len(m.pdbs) != 1 || len(m.certificates) != 1 || len(m.services) != 2 {
		t.Fatalf("want 1 StatefulSet, 2 Services, 1 ServiceMonitor, 1 NetworkPolicy, 1 PodDisruptionBudget, 1 Certificate; got %d, %d, %d, %d, %d, %d",
			len(m.statefulSets), len(m.services), len(m.serviceMonitors), len(m.networkPolicies), len(m.pdbs), len(m.certificates))
	}
	// kubectl apply -k applies every other file, in the namespace it creates.
	if len(m.kustomizations) != 1 || len(m.namespaces) != 1 {
		t.Fatal("want one kustomization.yaml and one Namespace")
	}
	k := m.kustomizations[0]
	others := slices.DeleteFunc(slices.Clone(m.files), func(f string) bool { return f == "kustomization.yaml" })
	if !slices.Equal(slices.Sorted(slices.Values(k.Resources)), others) {
		t.Errorf("kustomization.yaml lists %v, the directory holds %v", k.Resources, others)
	}
	if k.Namespace != m.namespaces[0].Name {
		t.Errorf("kustomization.yaml's namespace %q is not the Namespace %q", k.Namespace, m.namespaces[0].Name)
	}
	nsOf := map[string]string{"certificate " + m.certificates[0].ObjectMeta.Name: m.certificates[0].ObjectMeta.Namespace}
	for _, o := range m.statefulSets {
		nsOf["statefulset "+o.Name] = o.Namespace
	}
	for _, o := range m.services {
		nsOf["service "+o.Name] = o.Namespace
	}
	for _, o := range m.serviceMonitors {
		nsOf["servicemonitor "+o.Name] = o.Namespace
	}
	for _, o := range m.networkPolicies {
		nsOf["networkpolicy "+o.Name] = o.Namespace
	}
	for _, o := range m.pdbs {
		nsOf["poddisruptionbudget "+o.Name] = o.Namespace
	}
	for _, o := range m.serviceAccounts {
		nsOf["serviceaccount "+o.Name] = o.Namespace
	}
	for obj, ns := range nsOf {
		if ns != k.Namespace {
			t.Errorf("%s is in namespace %q, not %q", obj, ns, k.Namespace)
		}
	}
	sts := m.statefulSets[0]
	pod := sts.Spec.Template
	podLabels := pod.Labels
	if !selects(sts.Spec.Selector.MatchLabels, podLabels) {
		t.Error("the StatefulSet's selector does not match its pod template")
	}
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	env := map[string]string{}
	var names []string
	for _, e := range c.Env {
		env[e.Name] = e.Value
		names = append(names, e.Name)
	}
	checkEnvNames(t, "statefulset.yaml", names)
	checkEnvValues(t, "statefulset.yaml", env)

	// Non-root, read-only root file system, no privilege escalation.
	psc, sc := pod.Spec.SecurityContext, c.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Error("the pod does not run as a non-root user")
	}
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("the container's root file system is not read-only")
	}
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Error("the container may escalate privileges or keeps capabilities")
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Error("the container lacks CPU and memory requests or a memory limit")
	}

	// Probes on /healthz (liveness) and /readyz (readiness), on the ingest port.
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	probe := func(name string, p *corev1.Probe, path string) {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != path {
			t.Errorf("%s probe: want GET %s", name, path)
			return
		}
		if p.HTTPGet.Port.String() != "ingest" {
			t.Errorf("%s probe on port %s, want the ingest port", name, p.HTTPGet.Port.String())
		}
	}
	probe("liveness", c.LivenessProbe, "/healthz")
	probe("readiness", c.ReadinessProbe, "/readyz")
	if want := ":" + fmt.Sprint(ports["ingest"]); env["SERVER_ADDR"] != want {
		t.Errorf("SERVER_ADDR = %q, want %q (the ingest port)", env["SERVER_ADDR"], want)
	}
	if want := ":" + fmt.Sprint(ports["metrics"]); env["METRICS_ADDR"] != want {
		t.Errorf("METRICS_ADDR = %q, want %q (the metrics port)", env["METRICS_ADDR"], want)
	}

	// The spool on the claim, one per pod.
	spool := env["SPOOL_DIR"]
	if spool == "" {
		t.Fatal("no SPOOL_DIR")
	}
	if len(sts.Spec.VolumeClaimTemplates) != 1 {
		t.Fatal("want one volumeClaimTemplate, for the spool")
	}
	claim := sts.Spec.VolumeClaimTemplates[0].Name
	mounted := false
	for _, vm := range c.VolumeMounts {
		if vm.Name == claim && strings.HasPrefix(spool+"/", strings.TrimSuffix(vm.MountPath, "/")+"/") {
			mounted = !vm.ReadOnly
		}
	}
	if !mounted {
		t.Errorf("SPOOL_DIR %s is not on the claim %s", spool, claim)
	}

	// The stop: a drain delay, inside SHUTDOWN_TIMEOUT, which bounds the
	// whole stop; SIGKILL comes only after it and a margin.
	drain := duration(t, "SHUTDOWN_DRAIN_DELAY", env["SHUTDOWN_DRAIN_DELAY"])
	stop := duration(t, "SHUTDOWN_TIMEOUT", env["SHUTDOWN_TIMEOUT"])
	grace := time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	if drain <= 0 || drain >= stop {
		t.Errorf("SHUTDOWN_DRAIN_DELAY %v must be positive and shorter than SHUTDOWN_TIMEOUT %v", drain, stop)
	}
	if grace < stop+5*time.Second {
		t.Errorf("terminationGracePeriodSeconds %v leaves no margin over SHUTDOWN_TIMEOUT %v", grace, stop)
	}

	// Metrics: TLS from cert-manager's Secret, and a bearer token.
	if env["METRICS_ENABLED"] != "true" || env["METRICS_REQUIRE_TLS"] != "true" || env["METRICS_TLS_CERT"] == "" || env["METRICS_BEARER_TOKEN_FILE"] == "" {
		t.Error("the metrics listener is not required to serve TLS with a bearer token")
	}
	cert := m.certificates[0]
	secretMounted := false
	for _, v := range pod.Spec.Volumes {
		if v.Secret != nil && v.Secret.SecretName == cert.Spec.SecretName {
			for _, vm := range c.VolumeMounts {
				if vm.Name == v.Name && strings.HasPrefix(env["METRICS_TLS_CERT"], vm.MountPath+"/") && strings.HasPrefix(env["METRICS_TLS_KEY"], vm.MountPath+"/") {
					secretMounted = true
				}
			}
		}
	}
	if !secretMounted {
		t.Errorf("METRICS_TLS_CERT and METRICS_TLS_KEY are not files of the Certificate's Secret %s", cert.Spec.SecretName)
	}

	// Services: ingest and metrics apart, each reaching its own port.
	var ingest, metrics *corev1.Service
	for _, s := range m.services {
		if s.Spec.Type != corev1.ServiceTypeClusterIP {
			t.Errorf("Service %s is %s, want ClusterIP", s.Name, s.Spec.Type)
		}
		if !selects(s.Spec.Selector, podLabels) {
			t.Errorf("Service %s does not select GoTrack's pods", s.Name)
		}
		for _, p := range s.Spec.Ports {
			switch p.TargetPort {
			case intstr.FromString("ingest"):
				ingest = s
			case intstr.FromString("metrics"):
				metrics = s
			default:
				t.Errorf("Service %s targets port %s, which the pod does not name", s.Name, p.TargetPort.String())
			}
		}
	}
	if ingest == nil || metrics == nil || ingest == metrics || len(ingest.Spec.Ports) != 1 || len(metrics.Spec.Ports) != 1 {
		t.Fatal("want one Service for ingest and a separate one for metrics")
	}
	if sts.Spec.ServiceName != metrics.Name && sts.Spec.ServiceName != ingest.Name {
		t.Errorf("the StatefulSet's serviceName %q is neither Service", sts.Spec.ServiceName)
	}

	// The ServiceMonitor selects the metrics Service only, with TLS and a bearer token.
	sm := m.serviceMonitors[0]
	if !selects(sm.Spec.Selector.MatchLabels, metrics.Labels) || selects(sm.Spec.Selector.MatchLabels, ingest.Labels) {
		t.Error("the ServiceMonitor must select the metrics Service and not the ingest one")
	}
	if len(sm.Spec.Endpoints) != 1 {
		t.Fatal("want one ServiceMonitor endpoint")
	}
	ep := sm.Spec.Endpoints[0]
	if ep.Port != metrics.Spec.Ports[0].Name {
		t.Errorf("ServiceMonitor port %q, want the metrics Service's %q", ep.Port, metrics.Spec.Ports[0].Name)
	}
	if ep.Scheme == nil || strings.ToLower(string(*ep.Scheme)) != "https" || ep.TLSConfig == nil || ep.TLSConfig.ServerName == nil {
		t.Fatal("the ServiceMonitor does not scrape over TLS with a server name")
	}
	if !slices.Contains(cert.Spec.DNSNames, *ep.TLSConfig.ServerName) {
		t.Errorf("the ServiceMonitor's serverName %s is not among the Certificate's names %v", *ep.TLSConfig.ServerName, cert.Spec.DNSNames)
	}
	if ep.TLSConfig.CA.Secret == nil || ep.TLSConfig.CA.Secret.Name != cert.Spec.SecretName {
		t.Error("the ServiceMonitor does not trust the CA of the Certificate's Secret")
	}
	if ep.Authorization == nil || ep.Authorization.Credentials == nil || ep.Authorization.Credentials.Name == "" {
		t.Error("the ServiceMonitor sends no bearer token")
	} else {
		tokenMounted := false
		for _, v := range pod.Spec.Volumes {
			if v.Secret != nil && v.Secret.SecretName == ep.Authorization.Credentials.Name {
				for _, vm := range c.VolumeMounts {
					if vm.Name == v.Name && env["METRICS_BEARER_TOKEN_FILE"] == vm.MountPath+"/"+ep.Authorization.Credentials.Key {
						tokenMounted = true
					}
				}
			}
		}
		if !tokenMounted {
			t.Error("METRICS_BEARER_TOKEN_FILE is not the file of the Secret the ServiceMonitor sends")
		}
	}

	// The NetworkPolicy: only Prometheus reaches the metrics port.
	np := m.networkPolicies[0]
	if !selects(np.Spec.PodSelector.MatchLabels, podLabels) {
		t.Error("the NetworkPolicy does not select GoTrack's pods")
	}
	metricsOpen := false
	for _, rule := range np.Spec.Ingress {
		for _, p := range rule.Ports {
			if p.Port == nil || p.Port.String() == "metrics" || p.Port.IntValue() == int(ports["metrics"]) {
				metricsOpen = true
				if len(rule.From) == 0 {
					t.Error("the NetworkPolicy opens the metrics port to every source")
				}
				for _, from := range rule.From {
					if from.PodSelector == nil || from.PodSelector.MatchLabels["app.kubernetes.io/name"] != "prometheus" || from.NamespaceSelector == nil {
						t.Errorf("the NetworkPolicy opens the metrics port to %+v, not only Prometheus", from)
					}
				}
			}
		}
		if len(rule.Ports) == 0 {
			t.Error("a NetworkPolicy rule opens every port")
		}
	}
	if !metricsOpen {
		t.Error("the NetworkPolicy does not let Prometheus reach the metrics port")
	}

	pdb := m.pdbs[0]
	if !selects(pdb.Spec.Selector.MatchLabels, podLabels) || (pdb.Spec.MaxUnavailable == nil && pdb.Spec.MinAvailable == nil) {
		t.Error("the PodDisruptionBudget does not bound GoTrack's pods")
	}
	if cert.Spec.IssuerRef.Name == "" || cert.Spec.SecretName == "" || !slices.Contains(cert.Spec.Usages, "server auth") {
		t.Error("the Certificate lacks an issuer, a Secret or the server auth usage")
	}
	if len(m.serviceAccounts) == 1 && m.serviceAccounts[0].Name != pod.Spec.ServiceAccountName {
		t.Errorf("the pod runs as ServiceAccount %q, not %q", pod.Spec.ServiceAccountName, m.serviceAccounts[0].Name)
	}
}

// TestKubernetesManifestsRejectMisspeltFields proves the strict decoding
// that TestKubernetesManifests relies on.
func TestKubernetesManifestsRejectMisspeltFields(t *testing.T) {
	b, err := os.ReadFile("kubernetes/statefulset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Replace(b, []byte("readOnlyRootFilesystem:"), []byte("readOnlyRootFileSystem:"), 1)
	if bytes.Equal(b, bad) {
		t.Fatal("statefulset.yaml has no readOnlyRootFilesystem")
	}
	if err := decodeStrict(bad, &appsv1.StatefulSet{}); err == nil {
		t.Error("a misspelt field decoded without error")
	}
}

// requireTool finds a program the test needs; see cmd/gotrack's helper of
// the same name: under scripts/test.sh or in CI a missing tool fails.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" || os.Getenv("GOTRACK_TEST_STRICT") != "" {
		t.Fatalf("%s is not installed; scripts/test.sh installs it", name)
	}
	t.Skipf("%s is not installed (run scripts/test.sh, which installs it)", name)
	return ""
}

// TestPrometheusConfigs checks every shipped Prometheus configuration with
// promtool: the example, the compose one, and the kubernetes_sd_configs job.
// Debian's promtool is built without Kubernetes service discovery, so for
// the last one scripts/test.sh builds an upstream promtool and names it in
// GOTRACK_PROMTOOL_K8S.
func TestPrometheusConfigs(t *testing.T) {
	promtool := requireTool(t, "promtool")
	for _, f := range []string{"prometheus/prometheus.yml", "compose/prometheus.yml", "prometheus/kubernetes-sd.yml"} {
		t.Run(strings.ReplaceAll(f, "/", "_"), func(t *testing.T) {
			bin := promtool
			if k8s := os.Getenv("GOTRACK_PROMTOOL_K8S"); k8s != "" && strings.HasSuffix(f, "kubernetes-sd.yml") {
				bin = k8s
			}
			// --syntax-only: the credential files exist only where Prometheus runs.
			out, err := exec.Command(bin, "check", "config", "--syntax-only", f).CombinedOutput()
			if err != nil && bytes.Contains(out, []byte("field kubernetes_sd_configs not found")) {
				msg := fmt.Sprintf("%s was built without Kubernetes service discovery (Debian's is); "+
					"scripts/test.sh builds an upstream promtool and sets GOTRACK_PROMTOOL_K8S", bin)
				if os.Getenv("CI") != "" || os.Getenv("GOTRACK_TEST_STRICT") != "" {
					t.Fatal(msg)
				}
				t.Skip(msg)
			}
			if err != nil {
				t.Errorf("promtool check config %s: %v\n%s", f, err, out)
			}
		})
	}
}

// TestPrometheusConfigSendsAlerts checks that the example configuration,
// which loads the alert rules, also names an Alertmanager to send them to.
func TestPrometheusConfigSendsAlerts(t *testing.T) {
	b, err := os.ReadFile("prometheus/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		RuleFiles []string `json:"rule_files"`
		Alerting  struct {
			Alertmanagers []struct {
				StaticConfigs []struct {
					Targets []string `json:"targets"`
				} `json:"static_configs"`
			} `json:"alertmanagers"`
		} `json:"alerting"`
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.RuleFiles) == 0 {
		t.Fatal("prometheus/prometheus.yml loads no rule files")
	}
	var targets []string
	for _, am := range cfg.Alerting.Alertmanagers {
		for _, sc := range am.StaticConfigs {
			targets = append(targets, sc.Targets...)
		}
	}
	if len(targets) == 0 {
		t.Error("prometheus/prometheus.yml loads alert rules but has no alerting.alertmanagers target: the alerts reach no one")
	}
}

// unitSettings reads a systemd unit's Key=value lines (repeated keys keep
// every value), and the Environment= assignments.
func unitSettings(t *testing.T, path string) (keys map[string][]string, env map[string]string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	keys, env = map[string][]string{}, map[string]string{}
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: not Key=value: %q", path, line)
		}
		keys[k] = append(keys[k], v)
		if k == "Environment" {
			name, value, _ := strings.Cut(v, "=")
			env[name] = value
		}
	}
	return keys, env
}

// TestSystemdUnit checks the unit's sandboxing and stop timing, and runs
// systemd-analyze verify on it (any warning fails), and its security
// score, where systemd-analyze works.
func TestSystemdUnit(t *testing.T) {
	const unit = "systemd/gotrack.service"
	keys, env := unitSettings(t, unit)
	for k, want := range map[string]string{
		"DynamicUser": "yes", "StateDirectory": "gotrack", "ProtectSystem": "strict",
		"NoNewPrivileges": "yes", "ProtectHome": "yes", "PrivateTmp": "yes",
	} {
		if !slices.Contains(keys[k], want) {
			t.Errorf("%s: want %s=%s, have %q", unit, k, want, keys[k])
		}
	}
	var names []string
	for n, v := range env {
		names = append(names, n)
		// Under ProtectSystem=strict only the state directory is writable.
		if strings.HasSuffix(n, "_PATH") || strings.HasSuffix(n, "_DIR") {
			if !strings.HasPrefix(v, "/var/lib/gotrack/") {
				t.Errorf("%s=%s is outside the StateDirectory, read-only under ProtectSystem=strict", n, v)
			}
		}
	}
	checkEnvNames(t, unit, names)
	checkEnvValues(t, unit, env)
	// SHUTDOWN_TIMEOUT bounds the whole stop (a drain delay included).
	stopTimeout := duration(t, "TimeoutStopSec", keys["TimeoutStopSec"][0])
	shutdown := duration(t, "SHUTDOWN_TIMEOUT", env["SHUTDOWN_TIMEOUT"])
	if stopTimeout < shutdown+5*time.Second {
		t.Errorf("TimeoutStopSec=%v leaves no margin over SHUTDOWN_TIMEOUT %v: systemd would SIGKILL a draining GoTrack", stopTimeout, shutdown)
	}

	// Each ingest connection is a file descriptor (README, MAX_CONNECTIONS).
	maxConns := 1024
	if v := env["MAX_CONNECTIONS"]; v != "" {
		fmt.Sscan(v, &maxConns)
	}
	var nofile int
	if len(keys["LimitNOFILE"]) == 0 {
		t.Error("no LimitNOFILE")
	} else if fmt.Sscan(keys["LimitNOFILE"][0], &nofile); nofile < maxConns+1024 {
		t.Errorf("LimitNOFILE=%d leaves too little room over MAX_CONNECTIONS %d", nofile, maxConns)
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed; the unit's settings were checked above")
	}
	// verify wants ExecStart's program to exist: this test binary stands in
	// for /usr/local/bin/gotrack. Everything else is the shipped unit.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(unit)
	dir := t.TempDir()
	copyPath := filepath.Join(dir, "gotrack.service")
	if err := os.WriteFile(copyPath, bytes.ReplaceAll(b, []byte("ExecStart=/usr/local/bin/gotrack"), []byte("ExecStart="+self)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", copyPath).CombinedOutput()
	if err != nil && bytes.Contains(out, []byte("System has not been booted with systemd")) {
		t.Skipf("systemd-analyze verify does not work here: %s", out)
	}
	// verify exits 0 on unknown keys and bad values; it only warns.
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	// Exposure on systemd's 0-10 scale, threshold in tenths: 2.5 is "OK".
	out, err = exec.Command(analyze, "security", "--offline=yes", "--threshold=25", copyPath).CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze security: the unit's exposure is above 2.5 or the check failed: %v\n%s", err, out)
	}
	if i := bytes.Index(out, []byte("Overall exposure level")); i >= 0 {
		t.Logf("%s", bytes.TrimSpace(out[i:]))
	}
}

// TestComposeFile decodes deploy/compose/compose.yaml strictly (Compose's
// own field names) and checks what METRICS.md promises: the metrics port
// is not published, the listener requires credentials, and Prometheus
// reaches it by service name over a network both share, with the same
// secret. No container engine runs the file here; see the README.
func TestComposeFile(t *testing.T) {
	type service struct {
		Build *struct {
			Context    string `json:"context"`
			Dockerfile string `json:"dockerfile"`
		} `json:"build"`
		Image           string            `json:"image"`
		Restart         string            `json:"restart"`
		ReadOnly        bool              `json:"read_only"`
		Command         []string          `json:"command"`
		Environment     map[string]string `json:"environment"`
		StopGracePeriod string            `json:"stop_grace_period"`
		Secrets         []string          `json:"secrets"`
		Volumes         []string          `json:"volumes"`
		Ports           []string          `json:"ports"`
		Networks        []string          `json:"networks"`
	}
	var compose struct {
		Services map[string]service `json:"services"`
		Secrets  map[string]struct {
			File string `json:"file"`
		} `json:"secrets"`
		Volumes  map[string]*struct{} `json:"volumes"`
		Networks map[string]struct {
			Driver string `json:"driver"`
		} `json:"networks"`
	}
	b, err := os.ReadFile("compose/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := decodeStrict(b, &compose); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	g, ok := compose.Services["gotrack"]
	p, ok2 := compose.Services["prometheus"]
	if !ok || !ok2 {
		t.Fatal("compose.yaml needs the services gotrack and prometheus")
	}
	var names []string
	for n := range g.Environment {
		names = append(names, n)
	}
	checkEnvNames(t, "compose.yaml", names)
	composeEnv := maps.Clone(g.Environment)
	composeEnv["SPOOL_DIR"] = "/var/lib/gotrack/spool" // the Containerfile's
	checkEnvValues(t, "compose.yaml", composeEnv)
	if g.Build == nil {
		t.Fatal("the gotrack service is not built from the Containerfile")
	}
	if _, err := os.Stat(filepath.Join("compose", g.Build.Context, g.Build.Dockerfile)); err != nil {
		t.Errorf("the gotrack service's build file: %v", err)
	}
	_, metricsPort, _ := strings.Cut(g.Environment["METRICS_ADDR"], ":")
	if g.Environment["METRICS_ENABLED"] != "true" || metricsPort == "" {
		t.Fatal("gotrack's metrics listener is not on")
	}
	for _, port := range g.Ports {
		if strings.HasSuffix(port, ":"+metricsPort) || port == metricsPort {
			t.Errorf("gotrack publishes its metrics port: %q", port)
		}
	}
	tokenFile := g.Environment["METRICS_BEARER_TOKEN_FILE"]
	if tokenFile == "" && g.Environment["METRICS_TLS_CERT"] == "" && g.Environment["METRICS_BASIC_AUTH_FILE"] == "" {
		t.Error("gotrack's metrics listener is not protected")
	}
	shared := false
	for _, n := range g.Networks {
		shared = shared || slices.Contains(p.Networks, n)
	}
	if !shared {
		t.Error("gotrack and prometheus share no network")
	}
	for _, port := range p.Ports {
		if !strings.HasPrefix(port, "127.0.0.1:") {
			t.Errorf("Prometheus's port %q is published beyond the host's loopback", port)
		}
	}
	if stop := duration(t, "stop_grace_period", g.StopGracePeriod); stop < duration(t, "SHUTDOWN_TIMEOUT", g.Environment["SHUTDOWN_TIMEOUT"])+5*time.Second {
		t.Errorf("stop_grace_period %v leaves no margin over SHUTDOWN_TIMEOUT", stop)
	}

	// Prometheus's scrape job: gotrack by service name and metrics port,
	// with the token file of a secret gotrack also gets.
	var prom struct {
		ScrapeConfigs []struct {
			JobName       string `json:"job_name"`
			Authorization struct {
				CredentialsFile string `json:"credentials_file"`
			} `json:"authorization"`
			StaticConfigs []struct {
				Targets []string `json:"targets"`
			} `json:"static_configs"`
		} `json:"scrape_configs"`
	}
	pb, err := os.ReadFile("compose/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(pb, &prom); err != nil {
		t.Fatal(err)
	}
	if len(prom.ScrapeConfigs) != 1 || len(prom.ScrapeConfigs[0].StaticConfigs) != 1 {
		t.Fatal("compose/prometheus.yml: want one scrape job with one static config")
	}
	sc := prom.ScrapeConfigs[0]
	if want := "gotrack:" + metricsPort; !slices.Equal(sc.StaticConfigs[0].Targets, []string{want}) {
		t.Errorf("Prometheus scrapes %v, want [%s]", sc.StaticConfigs[0].Targets, want)
	}
	if sc.Authorization.CredentialsFile != tokenFile {
		t.Errorf("Prometheus sends %q, gotrack checks %q", sc.Authorization.CredentialsFile, tokenFile)
	}
	for _, s := range g.Secrets {
		if !slices.Contains(p.Secrets, s) || compose.Secrets[s].File == "" {
			t.Errorf("secret %s is not given to both services from a file", s)
		}
	}
}

// TestContainerfile checks the Containerfile's promises (a static binary,
// a minimal base, a non-root user, a health check, settings GoTrack knows)
// and builds the image where a container tool works; there is none on the
// machines the test suite was written on.
func TestContainerfile(t *testing.T) {
	b, err := os.ReadFile("container/Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	var stages []string
	var user, health string
	var envNames []string
	imageEnv := map[string]string{}
	for _, line := range strings.Split(strings.ReplaceAll(text, "\\\n", " "), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "FROM":
			stages = append(stages, f[1])
		case "USER":
			user = f[1]
		case "HEALTHCHECK":
			health = line
		case "ENV":
			for _, kv := range f[1:] {
				if n, v, ok := strings.Cut(kv, "="); ok {
					envNames = append(envNames, n)
					imageEnv[n] = v
				}
			}
		}
	}
	checkEnvNames(t, "Containerfile", envNames)
	if len(stages) < 2 || !strings.Contains(stages[len(stages)-1], "distroless/static") {
		t.Errorf("the final stage %v is not distroless/static", stages)
	}
	if !strings.Contains(text, "CGO_ENABLED=0") {
		t.Error("the binary is not built static (CGO_ENABLED=0)")
	}
	if uid, _, _ := strings.Cut(user, ":"); uid == "" || uid == "0" || uid == "root" {
		t.Errorf("USER %q: the image runs as root", user)
	}
	_, port, _ := strings.Cut(imageEnv["SERVER_ADDR"], ":")
	if port == "" || !strings.Contains(health, ":"+port+"/healthz") || !strings.Contains(health, "healthcheck") {
		t.Errorf("no HEALTHCHECK against /healthz on SERVER_ADDR's port %q: %q", port, health)
	}
	checkEnvValues(t, "Containerfile", imageEnv)
	for _, tool := range []string{"podman", "docker", "buildah"} {
		bin, err := exec.LookPath(tool)
		if err != nil {
			continue
		}
		args := []string{"build", "-f", "deploy/container/Containerfile", "-t", "gotrack:test", "."}
		if tool == "buildah" {
			args = append([]string{"bud"}, args[1:]...)
		}
		cmd := exec.Command(bin, args...)
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Logf("%s build did not work here (%v); the Containerfile was checked above:\n%s", tool, err, out)
			continue
		}
		return
	}
	t.Log("no container tool (podman, docker, buildah) works here: the image was not built")
}
