# op: host.preflight
$DataB64 = '__FAILOVER_DATA__'
# --- prologue: identical in every template (tests/test_templates.py checks it) ---
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
function Get-Win32Code($Exception) {
    # The Win32 error behind an exception chain (0 when there is none).
    for ($e = $Exception; $null -ne $e; $e = $e.InnerException) {
        if ($e -is [ComponentModel.Win32Exception]) {
            return $e.NativeErrorCode
        }
        if ($e -is [IO.IOException] -and ($e.HResult -band 0xFFFF0000) -eq 0x80070000) {
            return $e.HResult -band 0xFFFF
        }
    }
    return 0
}
function Get-ErrorChain($Exception) {
    # Every message of the chain: 'Cannot start service' alone hides the cause (1069, 1058, 1068).
    $messages = @()
    for ($e = $Exception; $null -ne $e; $e = $e.InnerException) {
        $text = [string]$e.Message
        $code = Get-Win32Code $e
        if ($code -ne 0 -and $null -eq $e.InnerException) {
            $text = "$text (Win32 error $code)"
        }
        if ($messages -notcontains $text) {
            $messages += $text
        }
    }
    return ($messages -join ' <- ')
}
function Write-Failure($Exception) {
    @{ ok = $false; error = (Get-ErrorChain $Exception) } | ConvertTo-Json -Compress
    exit 1
}
# --- end of prologue ---
# --- helpers: paths (identical wherever used) ---
function Assert-AbsolutePath([string]$Path) {
    # IsPathRooted accepts C:foo, \foo and UNC paths; .NET resolves those against the process, not us.
    if ($Path -notmatch '^[A-Za-z]:\\' -or [IO.Path]::GetFullPath($Path) -ne $Path) {
        throw "not an absolute path: '$Path'"
    }
}
function Get-PathKind([string]$Path) {
    # Test-Path says $false on access denied; GetAttributes tells a missing path from a forbidden one.
    try {
        $attributes = [IO.File]::GetAttributes($Path)
    }
    catch [IO.FileNotFoundException], [IO.DirectoryNotFoundException] {
        return 'missing'
    }
    catch [UnauthorizedAccessException] {
        throw "access denied: ${Path}: $(Get-ErrorChain $_.Exception)"
    }
    if (($attributes -band [IO.FileAttributes]::Directory) -ne 0) {
        return 'folder'
    }
    return 'file'
}
# --- end of helpers: paths ---
# --- helpers: service lookup (identical wherever used) ---
function Get-OneService([string]$Name) {
    # Get-Service -Name treats * ? [ ] as wildcards: an exact name must match exactly one service.
    if ($Name -eq '' -or $Name -match '[\*\?\[\]]') {
        throw "invalid service name '$Name': wildcard characters are not allowed"
    }
    $found = @(Get-Service -Name $Name -ErrorAction SilentlyContinue)
    if ($found.Count -ne 1) {
        throw "expected exactly one service named '$Name', found $($found.Count)"
    }
    return $found[0]
}
# --- end of helpers: service lookup ---
try {
    # Always over stdin, the route file.replace takes: a broken route shows here, before anything changes.
    $Data = [Text.Encoding]::UTF8.GetString([Convert]::FromBase64String($DataB64)) | ConvertFrom-Json
    $path = [string]$Data.settings_path
    Assert-AbsolutePath $path
    $svc = Get-OneService ([string]$Data.service)
    $size = $null
    if ((Get-PathKind $path) -eq 'file') {
        $size = (Get-Item -LiteralPath $path -Force).Length
    }
    $envelope = $null
    try {
        # The WSMan: drive answers administrators only; otherwise the limit is reported as unknown.
        $envelope = [int](Get-Item -LiteralPath 'WSMan:\localhost\MaxEnvelopeSizekb').Value
    }
    catch {
        $envelope = $null
    }
    $account = $null
    try {
        $key = 'HKLM:\SYSTEM\CurrentControlSet\Services\' + $svc.ServiceName
        $account = [string](Get-ItemProperty -LiteralPath $key -Name ObjectName).ObjectName
    }
    catch {
        $account = $null
    }
    $dependents = @($svc.DependentServices | ForEach-Object { [ordered]@{ name = $_.ServiceName; state = [string]$_.Status } })
    $policies = @(Get-ExecutionPolicy -List | ForEach-Object { [ordered]@{ scope = [string]$_.Scope; policy = [string]$_.ExecutionPolicy } })
    [ordered]@{
        ok                   = $true
        language_mode        = [string]$ExecutionContext.SessionState.LanguageMode
        execution_policies   = $policies
        max_envelope_size_kb = $envelope
        settings_size        = $size
        service              = $svc.ServiceName
        start_type           = [string]$svc.StartType
        account              = $account
        dependents           = $dependents
    } | ConvertTo-Json -Compress -Depth 4
}
catch {
    Write-Failure $_.Exception
}
